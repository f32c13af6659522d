"""Table 2's report: our parameter and multiply-add counts beside the paper's (``make table2``)."""

from __future__ import annotations


def table2_markdown(claims=None) -> str:
    """Our counts beside the paper's size claims (Table 2, and the rows of Tables 3 and 7 it prints params
    or GMACs for: ``experiments/paper_tables.yaml``)."""
    from cvt_lab.report import paper

    rows = [
        "# Complexity: the paper's numbers beside ours",
        "",
        "Made by `make table2` (`python -m cvt_lab.complexity --table2 ...`): parameters and multiply-adds",
        "counted from the model definition (`cvt_lab.complexity.count`, attention matmuls included), at the",
        "paper's configuration of each row; the paper's numbers are those of `experiments/paper_tables.yaml`",
        "(docs/paper.md).",
        "",
        "| model | size | params (paper) | params (ours) | diff | GMACs (paper) | GMACs (ours) | diff |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for claim in paper.complexity_claims() if claims is None else claims:
        ours_p, ours_m = paper.count_paper_config(claim.config)
        rows.append(f"| {claim.label} | {claim.config.size} | {claim.params:.2f}M | {ours_p:.3f}M | "
                    f"{100 * (ours_p / claim.params - 1):+.2f}% | {claim.gmacs:.2f} | {ours_m:.3f} | "
                    f"{100 * (ours_m / claim.gmacs - 1):+.2f}% |")
    rows += ["", "Tables 3, 5 and 7 print params rounded to whole millions (20M, 32M, 277M); the diff there is "
             "against that rounding.", ""]
    return "\n".join(rows)
