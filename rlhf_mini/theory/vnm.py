"""Von Neumann-Morgenstern utility: lotteries, expected utility and the four axioms.

A lottery L = (p_1, ..., p_m) over outcomes x_1..x_m. The VNM theorem: a preference relation over
lotteries satisfies

    completeness   for all L, M:  L >= M or M >= L
    transitivity   L >= M and M >= N  =>  L >= N
    continuity     L > M > N  =>  there is p in (0, 1) with  p L + (1 - p) N ~ M
    independence   L > M  <=>  p L + (1 - p) N > p M + (1 - p) N   for all N and p in (0, 1]

if and only if there is a utility u over outcomes with

    L >= M  <=>  EU(L) >= EU(M),       EU(L) = sum_i p_i u(x_i),

unique up to a positive affine map. Because EU is linear in the probabilities, a strict preference
L > M is the linear inequality u . (L - M) > 0; `rationalize` decides whether a list of stated
preferences admits any u (Gordan's alternative: either some u satisfies every inequality or a
non-negative combination of the difference vectors is zero, which is a certificate of
contradiction, as in the Allais paradox).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

_TOL = 1e-9


def _validate_probabilities(probabilities: object) -> np.ndarray:
    p = np.asarray(probabilities, dtype=float)
    if p.ndim != 1 or p.size == 0:
        raise ValueError(f"probabilities must be a non-empty 1-D array, got shape {p.shape}")
    if not np.all(np.isfinite(p)) or np.any(p < -_TOL):
        raise ValueError(f"probabilities must be finite and >= 0, got {p.tolist()}")
    if abs(p.sum() - 1.0) > 1e-6:
        raise ValueError(f"probabilities must sum to 1, they sum to {p.sum():.6g}")
    return np.clip(p, 0.0, None)


def expected_utility(probabilities: object, utilities: object) -> float:
    """EU = sum_i p_i u_i, after checking p_i >= 0 and sum_i p_i = 1."""
    p = _validate_probabilities(probabilities)
    u = np.asarray(utilities, dtype=float)
    if u.shape != p.shape:
        raise ValueError(f"{p.size} probabilities but {u.size} utilities")
    return float(p @ u)


@dataclass(frozen=True)
class Lottery:
    """A finite lottery: outcome names and their probabilities (zero-probability outcomes dropped)."""

    outcomes: tuple[str, ...]
    probabilities: tuple[float, ...]

    def __post_init__(self) -> None:
        outcomes = tuple(str(o) for o in self.outcomes)
        if len(outcomes) != len(self.probabilities):
            raise ValueError(
                f"{len(outcomes)} outcomes but {len(self.probabilities)} probabilities"
            )
        if len(set(outcomes)) != len(outcomes):
            raise ValueError(f"outcomes must be distinct, got {outcomes}")
        p = _validate_probabilities(self.probabilities)
        keep = p > _TOL
        object.__setattr__(self, "outcomes", tuple(o for o, k in zip(outcomes, keep) if k))
        object.__setattr__(self, "probabilities", tuple(float(x) for x in p[keep] / p[keep].sum()))

    @classmethod
    def sure(cls, outcome: str) -> Lottery:
        """The degenerate lottery that gives `outcome` with probability 1."""
        return cls((outcome,), (1.0,))

    @classmethod
    def from_dict(cls, distribution: Mapping[str, float]) -> Lottery:
        return cls(tuple(distribution), tuple(distribution.values()))

    def as_dict(self) -> dict[str, float]:
        return dict(zip(self.outcomes, self.probabilities))

    def mix(self, other: Lottery, p: float) -> Lottery:
        """The compound lottery p * self + (1 - p) * other, reduced to one stage."""
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"mixing weight must be in [0, 1], got {p}")
        combined: dict[str, float] = {}
        for lottery, weight in ((self, p), (other, 1.0 - p)):
            for o, q in lottery.as_dict().items():
                combined[o] = combined.get(o, 0.0) + weight * q
        return Lottery.from_dict(combined)

    def expected_utility(self, utility: Mapping[str, float]) -> float:
        missing = [o for o in self.outcomes if o not in utility]
        if missing:
            raise ValueError(f"no utility given for outcomes {missing}")
        return expected_utility(self.probabilities, [utility[o] for o in self.outcomes])

    def vector(self, outcomes: Sequence[str]) -> np.ndarray:
        """Probabilities laid out over a fixed list of outcomes."""
        d = self.as_dict()
        extra = set(d) - set(outcomes)
        if extra:
            raise ValueError(f"outcomes {sorted(extra)} missing from the outcome list")
        return np.array([d.get(o, 0.0) for o in outcomes])

    def __str__(self) -> str:
        return "{" + ", ".join(f"{o}: {p:.3g}" for o, p in self.as_dict().items()) + "}"


@dataclass(frozen=True)
class Preference:
    """A stated preference between two lotteries.

    relation ">" : left strictly preferred;  "~" : indifferent;  "?" : the person refuses to
    compare them (an explicit failure of completeness).
    """

    left: Lottery
    right: Lottery
    relation: str = ">"
    label: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.relation not in (">", "~", "?"):
            raise ValueError(f"relation must be '>', '~' or '?', got {self.relation!r}")

    def __str__(self) -> str:
        name = f"{self.label}: " if self.label else ""
        return f"{name}{self.left} {self.relation} {self.right}"


@dataclass
class Violation:
    axiom: str
    preferences: list[Preference]
    explanation: str


def _outcome_list(preferences: Sequence[Preference]) -> list[str]:
    seen: dict[str, None] = {}
    for pref in preferences:
        for lottery in (pref.left, pref.right):
            for o in lottery.outcomes:
                seen.setdefault(o, None)
    return list(seen)


def _find_cycle(preferences: Sequence[Preference], outcomes: list[str]) -> list[Preference] | None:
    """A cycle in the weak-preference graph that uses at least one strict edge."""
    nodes: list[np.ndarray] = []

    def node_of(lottery: Lottery) -> int:
        v = lottery.vector(outcomes)
        for i, existing in enumerate(nodes):
            if np.allclose(existing, v, atol=1e-9):
                return i
        nodes.append(v)
        return len(nodes) - 1

    edges: list[tuple[int, int, Preference, bool]] = []
    for pref in preferences:
        if pref.relation == "?":
            continue
        a, b = node_of(pref.left), node_of(pref.right)
        edges.append((a, b, pref, pref.relation == ">"))
        if pref.relation == "~":
            edges.append((b, a, pref, False))
    # For each strict edge a > b, look for a path back from b to a (BFS over weak edges).
    for a, b, pref, strict in edges:
        if not strict:
            continue
        parent: dict[int, tuple[int, Preference] | None] = {b: None}
        frontier = [b]
        while frontier and a not in parent:
            nxt = []
            for u in frontier:
                for x, y, p, _ in edges:
                    if x == u and y not in parent:
                        parent[y] = (u, p)
                        nxt.append(y)
            frontier = nxt
        if a in parent:
            path = [pref]
            node = a
            back = []
            while parent[node] is not None:
                prev, p = parent[node]
                back.append(p)
                node = prev
            return path + back[::-1]
    return None


def check_axioms(
    preferences: Sequence[Preference], *, continuity_threshold: float = 0.999
) -> list[Violation]:
    """Report which VNM axioms a finite list of stated preferences violates.

    completeness  an explicit refusal to compare ("?").
    transitivity  a cycle L1 >= L2 >= ... >= L1 containing a strict step.
    independence  two statements (A vs B) and (C vs D) with A - B = lam (C - D), lam > 0, but
                  different verdicts. Independence forces the same verdict: with q = 1 / (1 + lam),
                  q A + (1 - q) D = q B + (1 - q) C, so A > B gives, mixing both with D,
                  q B + (1 - q) C = q A + (1 - q) D > q B + (1 - q) D, and independence then
                  gives C > D. (Allais: A - B = C - D exactly.)
    continuity    L > M > N (stated, possibly via transitivity) and M > p L + (1 - p) N stated
                  for some p >= continuity_threshold: no finite list can prove continuity fails,
                  but refusing even a 1-in-1000 risk of N is the signature of lexicographic
                  preferences, which violate it.
    """
    prefs = list(preferences)
    outcomes = _outcome_list(prefs)
    violations: list[Violation] = []

    for pref in prefs:
        if pref.relation == "?":
            violations.append(
                Violation(
                    "completeness", [pref], f"refuses to compare {pref.left} and {pref.right}"
                )
            )

    cycle = _find_cycle(prefs, outcomes)
    if cycle:
        violations.append(
            Violation(
                "transitivity",
                cycle,
                "the stated preferences form a cycle: " + " ; ".join(str(p) for p in cycle),
            )
        )

    comparable = [p for p in prefs if p.relation != "?"]
    sign = {">": 1, "~": 0}
    for i, first in enumerate(comparable):
        d1 = first.left.vector(outcomes) - first.right.vector(outcomes)
        for second in comparable[i + 1 :]:
            d2 = second.left.vector(outcomes) - second.right.vector(outcomes)
            if np.allclose(d1, 0) or np.allclose(d2, 0):
                continue
            lam = float(d1 @ d2) / float(d2 @ d2)
            if not np.allclose(d1, lam * d2, atol=1e-9):
                continue
            # Same direction: verdicts must agree; opposite direction: they must be mirrored.
            v1, v2 = sign[first.relation], sign[second.relation]
            consistent = v1 == v2 if lam > 0 else (v1 == 0 and v2 == 0)
            if not consistent:
                violations.append(
                    Violation(
                        "independence",
                        [first, second],
                        f"the two choices differ only by a common component (difference vectors "
                        f"are proportional, factor {lam:.3g}), so independence demands the same "
                        f"verdict, but they disagree: '{first}' vs '{second}'",
                    )
                )

    strict = [p for p in comparable if p.relation == ">"]
    for top in strict:
        for bottom in strict:
            if not np.allclose(top.right.vector(outcomes), bottom.left.vector(outcomes)):
                continue
            high, middle, low = top.left, top.right, bottom.right
            for pref in strict:
                if not np.allclose(pref.left.vector(outcomes), middle.vector(outcomes)):
                    continue
                right = pref.right.vector(outcomes)
                d = high.vector(outcomes) - low.vector(outcomes)
                if np.allclose(d, 0):
                    continue
                p = float((right - low.vector(outcomes)) @ d / (d @ d))
                if np.allclose(right, low.vector(outcomes) + p * d) and p >= continuity_threshold:
                    violations.append(
                        Violation(
                            "continuity",
                            [top, bottom, pref],
                            f"{high} > {middle} > {low}, yet the middle lottery is preferred even "
                            f"to a {p:.4g} chance of the best and {1 - p:.2g} of the worst: no "
                            "mixture is ever indifferent (lexicographic preferences)",
                        )
                    )
    return violations


@dataclass
class Rationalization:
    """Result of `rationalize`: a utility when one exists, else a certificate of contradiction."""

    utility: dict[str, float] | None
    certificate: dict[str, float] | None
    margin: float


def rationalize(preferences: Sequence[Preference], *, n_iter: int = 20000) -> Rationalization:
    """Find u with u . (L - M) > 0 for every strict L > M and u . (L - M) = 0 for every L ~ M.

    Let d_k be the difference vectors of the strict statements, projected off the span of the
    indifference differences. Minimise ||sum_k y_k d_k|| over the simplex y >= 0, sum y = 1
    (projected gradient). If the minimum-norm point v is nonzero then u = v works: u . d_k >= ||v||^2
    for every k. If it is zero, sum_k y_k u . d_k = 0 for every u, so the inequalities contradict
    each other and y (the certificate) says which statements to add up.
    """
    prefs = [p for p in preferences if p.relation in (">", "~")]
    outcomes = _outcome_list(prefs)
    strict = [p for p in prefs if p.relation == ">"]
    ties = [p for p in prefs if p.relation == "~"]
    if not strict:
        return Rationalization({o: 0.0 for o in outcomes}, None, 0.0)
    d = np.array([p.left.vector(outcomes) - p.right.vector(outcomes) for p in strict])
    if ties:
        e = np.array([p.left.vector(outcomes) - p.right.vector(outcomes) for p in ties])
        basis, sv, _ = np.linalg.svd(e.T, full_matrices=False)
        basis = basis[:, sv > 1e-10]
        d = d - (d @ basis) @ basis.T
    y = np.full(len(strict), 1.0 / len(strict))
    gram = d @ d.T
    step = 1.0 / max(np.linalg.eigvalsh(gram).max(), 1e-12)
    for _ in range(n_iter):
        y = _project_simplex(y - step * gram @ y)
    v = y @ d
    norm = float(np.linalg.norm(v))
    scale = float(np.abs(d).max())
    if norm > 1e-6 * max(scale, 1e-12):
        u = v / norm
        return Rationalization(dict(zip(outcomes, u.tolist())), None, float((d @ u).min()))
    certificate = {str(p): float(w) for p, w in zip(strict, y) if w > 1e-6}
    return Rationalization(None, certificate, norm)


def _project_simplex(v: np.ndarray) -> np.ndarray:
    """Euclidean projection onto {y >= 0, sum y = 1} (Duchi et al. 2008)."""
    u = np.sort(v)[::-1]
    css = np.cumsum(u)
    ks = np.arange(1, v.size + 1)
    rho = np.nonzero(u * ks > css - 1)[0][-1]
    theta = (css[rho] - 1) / (rho + 1)
    return np.clip(v - theta, 0.0, None)


def allais_preferences() -> list[Preference]:
    """The typical Allais (1953) choices, outcomes in millions.

    1A: 1M for sure              >  1B: 0.89 * 1M + 0.10 * 5M + 0.01 * 0
    2B: 0.10 * 5M + 0.90 * 0     >  2A: 0.11 * 1M + 0.89 * 0
    Both pairs share the difference 0.11 * 1M - 0.10 * 5M - 0.01 * 0, so EU ranks them the same way:
    u(1A) - u(1B) = u(2A) - u(2B) = 0.11 u(1M) - 0.10 u(5M) - 0.01 u(0).
    """
    a1 = Lottery.sure("1M")
    b1 = Lottery(("1M", "5M", "0"), (0.89, 0.10, 0.01))
    a2 = Lottery(("1M", "0"), (0.11, 0.89))
    b2 = Lottery(("5M", "0"), (0.10, 0.90))
    return [Preference(a1, b1, ">", "choice 1"), Preference(b2, a2, ">", "choice 2")]
