"""``reproduce report TABLE``: the paper's tables compiled from the tracking
store, beside the paper's numbers (``report.gather``, ``report.render``)."""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from reproduce.errors import UserError
from reproduce.report.gather import attach_maps, gather
from reproduce.report.render import (compile_pdfs, concerns_orderings, judged, render, render_orderings,
                                     require_orderings)
from reproduce.sweep.sweep import Sweep


def cmd_report(args) -> int:
    sweep = Sweep.from_args(args)
    tables = gather(sweep, paper_only=args.paper)
    if args.format == "orderings":
        if args.paper:
            raise UserError("--paper and --format orderings: the orderings are judged from trained seeds",
                            hint="drop --paper")
        require_orderings(tables)
        page = judged(tables, sweep.profile)
        if args.output is None:
            sys.stdout.write(render_orderings(page))
        else:
            from reproduce.report.plots import orderings_plot
            args.output.mkdir(parents=True, exist_ok=True)
            page["plot"] = orderings_plot(page["verdicts"], sweep.profile.name, args.output)
            (args.output / "orderings.md").write_text(render_orderings(page))
            print(args.output / "orderings.md")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        # the pictures go beside the report files, or (a page on stdout) into the page alone
        pictures = args.output or Path(tmp)
        plots, page_orderings = {}, None
        if args.format == "html" or args.output:
            from reproduce.report.plots import make_plots
            plots = make_plots(tables, pictures)
        if args.format == "html" and not args.paper:
            attach_maps(tables, sweep.tracker(read_only=True), Path(tmp) / "maps")
            if concerns_orderings(tables):  # the page shows them above the tables, as a picture and a table
                from reproduce.report.plots import orderings_plot
                page_orderings = judged(tables, sweep.profile)
                page_orderings["plot"] = orderings_plot(page_orderings["verdicts"], sweep.profile.name, pictures)
    if args.output is None:
        sys.stdout.write(render(tables, args.format, plots, page_orderings))
        return 0
    args.output.mkdir(parents=True, exist_ok=True)
    ext = {"md": "md", "tex": "tex", "html": "html", "json": "json"}[args.format]
    if args.format == "html":
        (args.output / "index.html").write_text(render(tables, "html", plots, page_orderings))
        print(args.output / "index.html")
        return 0
    written = []
    for t in tables:
        path = args.output / f"{t.table.name}.{ext}"
        path.write_text(render([t], args.format, plots))
        print(path)
        written.append(path)
    if args.format == "tex":
        compile_pdfs(written)
    return 0


