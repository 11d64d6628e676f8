"""Plots where a picture says more than the table, as a spec's ``plot:`` asks:
AP against alpha (Table 1), #A (Table 5, one curve per alpha) and the
temperature ratio (Table 4), the paper's curve beside the reproduced one; and
the orderings' effects with their intervals (matplotlib, PNG and PDF).

A curve needs two points: a reproduced report with fewer than two finished
values of the plot's setting (in every group, for Table 5's curve per alpha)
draws no plot and says why (one point beside one point compares nothing)."""
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


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, stem: Path) -> dict[str, str]:
    """``fig`` as STEM.png and STEM.pdf, and as the base64 PNG the HTML page embeds."""
    plt = _pyplot()
    fig.savefig(stem.with_suffix(".png"), dpi=110)
    fig.savefig(stem.with_suffix(".pdf"))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return dict(png_b64=base64.b64encode(buf.getvalue()).decode(), path=str(stem) + ".png", name=stem.name + ".png")


def make_plots(tables, outdir: Path) -> dict[str, dict[str, str]]:
    """Per table with a ``plot:``, its picture (``png_b64``, ``path``), or a ``note`` saying why none is drawn."""
    plt = _pyplot()
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
        if not t.paper_only:
            longest = max(len({p[0] for p in pts if p[2] is not None}) for pts in series.values())
            if longest < 2:
                each = f" for any one {group_key}" if group_key else ""
                result[t.table.name] = dict(note=(
                    f"No plot of AP against {xlabel}: profile {t.profile} finished fewer than two values of it{each}, "
                    f"and a curve needs two (scripts/reproduce report {t.table.name} --paper --format html -o DIR "
                    "draws the paper's)."))
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
        result[t.table.name] = _save(fig, outdir / f"{t.table.name}_{'paper' if t.paper_only else t.profile}")
    return result


def orderings_plot(verdicts, profile: str, outdir: Path) -> dict[str, str] | None:
    """Each measured ordering's effect (higher minus lower in the paper's order) with its 95%
    interval, against zero, coloured by its verdict: one panel per metric (their units differ).
    The interval is each test's own; the colour is the verdict after Holm's correction over the
    page, so an interval clear of zero can still be grey, and the label says so. None when no
    ordering is measured."""
    from reproduce.metrics import metrics
    from reproduce.report.orderings import VERDICT_COLOURS
    measured = [v for v in verdicts if v.test is not None]
    if not measured:
        return None
    plt = _pyplot()
    from matplotlib.lines import Line2D
    by_metric: dict[str, list] = {}
    for v in measured:
        by_metric.setdefault(v.ordering.metric, []).append(v)
    heights = [len(vs) + 1.2 for vs in by_metric.values()]
    fig, axes = plt.subplots(len(by_metric), 1, figsize=(10, 0.32 * sum(heights) + 1.2), squeeze=False,
                             gridspec_kw=dict(height_ratios=heights))
    for ax, (metric, vs) in zip(axes[:, 0], by_metric.items()):
        ys = list(range(len(vs)))[::-1]
        for y, v in zip(ys, vs):
            colour = VERDICT_COLOURS[v.verdict]
            d = v.test.difference
            if v.test.exact:
                ax.plot([d], [y], "D", color=colour, markersize=6)
            else:
                ax.errorbar([d], [y], xerr=[[d - v.test.low], [v.test.high - d]], fmt="o", color=colour,
                            capsize=3, markersize=5)
        ax.axvline(0, color="#222", linewidth=0.8)
        ax.set_yticks(ys)
        ax.set_yticklabels([v.ordering.claim if len(v.ordering.claim) <= 70 else v.ordering.claim[:69] + "…"
                            for v in vs], fontsize=8)
        ax.set_ylim(-0.7, len(vs) - 0.3)
        unit = metrics()[metric].unit
        ax.set_title(f"{metrics()[metric].md}{f' ({unit})' if unit else ''}", fontsize=9, loc="left")
        ax.grid(axis="x", alpha=0.3)
    axes[-1, 0].set_xlabel("higher minus lower row in the paper's order (right of 0: the paper's way):\n"
                           "the mean over seeds and its 95% interval (Welch), not adjusted for the page's tests;\n"
                           "the colour is the verdict after Holm's correction over them", fontsize=8)
    fig.legend(handles=[Line2D([], [], color=c, marker="o", linestyle="", label=name)
                        for name, c in VERDICT_COLOURS.items() if name in {v.verdict for v in measured}] +
               [Line2D([], [], color="#555", marker="D", linestyle="", label="exact (no spread)")
                for _ in range(any(v.test.exact for v in measured))],
               loc="upper center", ncol=4, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / (0.32 * sum(heights) + 1.2)))
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    return _save(fig, outdir / f"orderings_{profile}")
