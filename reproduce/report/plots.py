"""Plots where a picture says more than the table, as a spec's ``plot:`` asks:
AP against alpha (Table 1), #A (Table 5, one curve per alpha) and the
temperature ratio (Table 4), the paper's curve beside the reproduced one
(matplotlib, PNG and PDF)."""
from __future__ import annotations

import base64
import io
from pathlib import Path

def _series(rows, plot):
    x_key, group_key = plot.x, plot.group
    groups: dict = {}
    for row in rows:
        if x_key not in row.switches or any(s in row.switches for s in plot.skip_rows_setting):
            continue
        g = row.switches.get(group_key) if group_key else None
        ap = next(c for c in row.cells if c.metric == "AP")
        groups.setdefault(g, []).append((row.switches[x_key], ap.paper, ap.value))
    return {g: sorted(v) for g, v in groups.items()}


def make_plots(tables, outdir: Path) -> dict[str, dict[str, str]]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    result = {}
    for t in tables:
        plot = t.table.plot
        if plot is None:
            continue
        x_key, group_key, xlabel = plot.x, plot.group, plot.xlabel
        series = _series(t.rows, plot)
        if not series:
            continue
        fig, axes = plt.subplots(1, 2 if not t.paper_only else 1, figsize=(9 if not t.paper_only else 4.8, 3.4),
                                 squeeze=False)
        for gi, (g, pts) in enumerate(series.items()):
            label = "" if g is None else f"{group_key} = {g:.3g}"
            xs = [p[0] for p in pts]
            axes[0][0].plot(xs, [p[1] for p in pts], "o-", color=f"C{gi}", label=("paper " + label).strip())
            if not t.paper_only:
                rx = [(p[0], p[2]) for p in pts if p[2] is not None]
                if rx:
                    axes[0][1].plot([p[0] for p in rx], [p[1] for p in rx], "s--", color=f"C{gi}",
                                    label=(f"reproduced ({t.profile}) " + label).strip())
        axes[0][0].set_title("paper (COCO)")
        if not t.paper_only:
            axes[0][1].set_title(f"reproduced (profile {t.profile})")
        for ax in axes[0]:
            if x_key == "num_anchors":
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel(xlabel)
            ax.set_ylabel("AP")
            ax.grid(alpha=0.3)
            if ax.lines:
                ax.legend(fontsize=8)
        fig.suptitle(f"{t.table.name}: {t.table.title}", fontsize=10)
        fig.tight_layout()
        stem = outdir / f"{t.table.name}_{'paper' if t.paper_only else t.profile}"
        fig.savefig(stem.with_suffix(".png"), dpi=110)
        fig.savefig(stem.with_suffix(".pdf"))
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90)
        plt.close(fig)
        result[t.table.name] = dict(png_b64=base64.b64encode(buf.getvalue()).decode(), path=str(stem) + ".png")
    return result
