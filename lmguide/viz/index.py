"""The ``index.html`` of ``python -m lmguide.visualize input=<folder>``: one row per image."""

from __future__ import annotations

import html
from pathlib import Path


def write_index(
    out_dir: Path, folder: Path, results: dict[str, dict], failed: dict[str, str], stems: dict[str, str]
) -> Path:
    """A self-contained page (relative links only) listing, per image of ``folder``: each face's panel
    as a thumbnail linking to its PNGs with its P(fake), and the file's P(fake) and verdict by predict's
    rule at the checkpoint's threshold; the images that could not be explained with the reason.
    ``stems``: file name -> its subfolder under ``out_dir``."""
    rows, rule, threshold = [], "", None
    for name in sorted({*results, *failed}):
        cell = html.escape(name)
        if name in failed:
            rows.append(f"<tr><td>{cell}</td><td colspan=3 class=err>{html.escape(failed[name])}</td></tr>")
            continue
        r = results[name]
        rule, threshold = r["rule"], r["threshold"]
        pics = []
        for f in r["faces"]:
            p = "-" if f["prob_fake"] is None else f"{f['prob_fake']:.4f}"
            head = f"face {f['face']}: P(fake) {p}" + (
                "" if f["scored"] else f" (not in the verdict: {f['note']})"
            )
            paths = f["paths"]
            if not paths:
                pics.append(f"<p>{html.escape(head)}</p>")
                continue
            rel = {k: html.escape(path.relative_to(out_dir).as_posix()) for k, path in paths.items()}
            links = " ".join(f'<a href="{v}">{html.escape(k)}</a>' for k, v in rel.items())
            pics.append(
                f'<p>{html.escape(head)}<br><a href="{rel["panel"]}"><img src="{rel["panel"]}" width=480>'
                f"</a><br>{links}</p>"
            )
        verdict = r["verdict"] or "-"
        p = "-" if r["prob_fake"] is None else f"{r['prob_fake']:.4f}"
        rows.append(
            f"<tr><td>{cell}</td><td>{''.join(pics)}</td><td>{p}</td><td class={verdict}>{verdict}</td></tr>"
        )
    how = "no face was scored" if threshold is None else f"verdict: {rule}, threshold {threshold:.4f}"
    page = (
        "<!doctype html><meta charset=utf-8><title>lmguide visualize: "
        f"{html.escape(folder.name)}</title><style>body{{font-family:sans-serif}}td{{padding:4px;"
        "vertical-align:top}}.fake{color:#b00}.real{color:#070}.err{color:#b00}</style>"
        f"<h1>{html.escape(str(folder))}</h1><p>{len(results)} explained, {len(failed)} not; "
        f"{html.escape(how)} (the checkpoint's, as predict's)</p><table><tr><th>image</th><th>each face: "
        "face | mask | mean attention | Grad-CAM</th><th>P(fake)</th><th>verdict</th></tr>"
        + "".join(rows)
        + "</table>\n"
    )
    path = out_dir / "index.html"
    path.write_text(page, encoding="utf-8")
    return path
