"""The vendored reveal.js themes load no web fonts: a remote ``@import`` is dropped, a local one kept."""

from rlhf_mini import slides


def test_remote_font_imports_are_dropped_from_the_themes(tmp_path):
    themes = tmp_path / "reveal.js" / "dist" / "theme"
    themes.mkdir(parents=True)
    css = themes / "simple.css"
    css.write_text("/* https://example.org in a comment stays */\n"
                   "@import url(./fonts/source-sans-pro/source-sans-pro.css);\n"
                   "@import url(https://fonts.googleapis.com/css?family=News+Cycle:400,700);\n"
                   "@import url('//fonts.googleapis.com/css?family=Lato');\n"
                   ".reveal { font-family: 'Lato', sans-serif; }\n")
    assert slides.strip_remote_imports(tmp_path) == [css]
    assert css.read_text() == ("/* https://example.org in a comment stays */\n"
                               "@import url(./fonts/source-sans-pro/source-sans-pro.css);\n"
                               ".reveal { font-family: 'Lato', sans-serif; }\n")
    assert slides.strip_remote_imports(tmp_path) == []  # nothing left to change the second time
