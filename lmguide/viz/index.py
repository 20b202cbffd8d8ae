"""The ``index.html`` of ``python -m lmguide.visualize input=<folder>``: one row per image."""

from __future__ import annotations

import html
from pathlib import Path


def write_index(
    out_dir: Path, folder: Path, results: dict[str, dict], failed: dict[str, str], stems: dict[str, str]
) -> Path:
    """A self-contained page (relative links only) listing, per image of ``folder``: the panel as a
    thumbnail linking to the image's PNGs, P(fake) and the verdict at 0.5; the images that could not
    be explained with the reason. ``stems``: file name -> its subfolder under ``out_dir``."""
    rows = []
    for name in sorted({*results, *failed}):
        sub, cell = html.escape(stems[name]), html.escape(name)
        if name in failed:
            rows.append(f"<tr><td>{cell}</td><td colspan=3 class=err>{html.escape(failed[name])}</td></tr>")
            continue
        p = results[name]["prob_fake"]
        verdict = "fake" if p >= 0.5 else "real"
        links = " ".join(
            f'<a href="{sub}/{html.escape(path.name)}">{html.escape(path.stem)}</a>'
            for path in results[name]["paths"].values()
        )
        rows.append(
            f'<tr><td>{cell}</td><td><a href="{sub}/panel.png"><img src="{sub}/panel.png" width=480></a>'
            f"<br>{links}</td><td>{p:.4f}</td><td class={verdict}>{verdict}</td></tr>"
        )
    page = (
        "<!doctype html><meta charset=utf-8><title>lmguide visualize: "
        f"{html.escape(folder.name)}</title><style>body{{font-family:sans-serif}}td{{padding:4px;"
        "vertical-align:top}}.fake{color:#b00}.real{color:#070}.err{color:#b00}</style>"
        f"<h1>{html.escape(str(folder))}</h1><p>{len(results)} explained, {len(failed)} not; "
        "verdict at P(fake) = 0.5</p><table><tr><th>image</th><th>face | mask | mean attention | "
        "Grad-CAM</th><th>P(fake)</th><th>verdict</th></tr>" + "".join(rows) + "</table>\n"
    )
    path = out_dir / "index.html"
    path.write_text(page, encoding="utf-8")
    return path
