"""Markdown tables of a composition report (`python -m evaluation.composition`)."""

from __future__ import annotations


def _row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |\n"


def _table(header, rows) -> str:
    return _row(header) + _row(["---"] * len(header)) + "".join(_row(r) for r in rows)


def _f(x: float) -> str:
    return f"{x:.2f}"


def negatives_table(neg: dict, alpha: float) -> str:
    """(a) R@1 / R@10 against beta, all, seen and held-out targets; per attribute; two negatives."""
    head = (f"### (a) Negative text: {neg['queries']} single-change queries, negative = the old value, "
            f"Slerp alpha {alpha}\n\n")
    groups = ("all", "seen", "heldout")
    first = next(iter(neg["sweep"].values()))
    header = ["beta"] + [f"{m} {g} ({first[g]['n']})" for g in groups for m in ("R@1", "R@10")]
    rows = [[b] + [_f(r[g][m]) for g in groups for m in ("R@1", "R@10")] for b, r in neg["sweep"].items()]
    out = head + _table(header, rows)
    betas = list(next(iter(neg["by_attribute"].values())))
    out += "\nR@1 by changed attribute (negative: the reference's old value):\n\n"
    out += _table(["changed", "queries"] + [f"beta {b}" for b in betas],
                  [[name, r[betas[0]]["n"]] + [_f(r[b]["R@1"]) for b in betas] for name, r in neg["by_attribute"].items()])
    two = neg["two_changes"]
    betas = list(two["results"]["spherical mean"])
    out += f"\n{two['queries']} two-change queries, both old values as negatives: R@1 (R@10) against beta:\n\n"
    out += _table(["negatives"] + [f"beta {b}" for b in betas],
                  [[k] + [f"{_f(r[b]['all']['R@1'])} ({_f(r[b]['all']['R@10'])})" if b in r else
                          f"{_f(r[0.0]['all']['R@1'])} ({_f(r[0.0]['all']['R@10'])})" for b in betas]
                   for k, r in two["results"].items()])
    return out


def references_table(refs: dict, alpha: float) -> str:
    """(b) R@1 against alpha for 1, 2, 4 references (and the Euclidean mean of 4)."""
    kinds = [k for k in refs if k not in ("queries", "skipped")]
    alphas = list(refs[kinds[0]])
    out = (f"### (b) Several references: {refs['queries']} queries, renders of the reference combination "
           f"merged by the spherical mean\n\n")
    out += _table(["references"] + [f"R@1 alpha {a}" for a in alphas] +
                  [f"R@1 seen ({alpha})", f"R@1 held-out ({alpha})"],
                  [[k] + [_f(refs[k][a]["all"]["R@1"]) for a in alphas] +
                   [_f(refs[k][alpha]["seen"]["R@1"]), _f(refs[k][alpha]["heldout"]["R@1"])] for k in kinds])
    return out


def gallery_table(gal: dict, alpha: float) -> str:
    """(c) R@1 over alpha x B; the best B per alpha; other title qualities at `alpha`."""
    out = f"### (c) Composed gallery items: {gal['queries']} queries, R@1 (all queries) over query alpha x item weight B\n"
    for label in (gal["main"], "all 5 attributes, none wrong"):
        grid = gal["variants"][label]
        weights = list(next(iter(grid.values())))
        rows = []
        for a, by_b in grid.items():
            best = max(weights, key=lambda b: by_b[b]["all"]["R@1"])
            rows.append([a] + [_f(by_b[b]["all"]["R@1"]) for b in weights] +
                        [f"B {best}: {by_b[best]['all']['R@1'] - by_b[0.0]['all']['R@1']:+.2f}"])
        out += f"\nItem titles: {label}.\n\n"
        out += _table(["query alpha"] + [f"B {b}" for b in weights] + ["best B vs images only"], rows)
    out += f"\nAt query alpha {alpha}, R@1 all / held-out against B, by title quality:\n\n"
    out += _table(["titles"] + [f"B {b}" for b in weights],
                  [[label] + [f"{_f(g[alpha][b]['all']['R@1'])} / {_f(g[alpha][b]['heldout']['R@1'])}" for b in weights]
                   for label, g in gal["variants"].items()])
    examples = "; ".join(f'"{t}"' if t else "(untitled)" for t in gal["examples"][gal["main"]])
    return out + f"\nExample titles ({gal['main']}): {examples}\n"


def tables(report: dict) -> str:
    """All three tables, each under a heading."""
    return "\n".join([negatives_table(report["negatives"], report["alpha"]), references_table(report["references"], report["alpha"]),
                      gallery_table(report["gallery"], report["alpha"])])
