"""rlhf_mini: the from-scratch package behind the RLHF 201 course."""

__version__ = "0.1.0"
