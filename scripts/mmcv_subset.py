"""Trim an unpacked mmcv source tree to the ops a detector needs, on CPU as on CUDA.

Why: mmcv 2.1.0 compiles 77 C++ files for its CPU ops and 59 CUDA files more
for its CUDA ops; MuSu, FCOS and FCOS++ need four ops (NMS, sigmoid focal
loss, deformable and modulated deformable convolution). The full CPU build
takes about 15 minutes on 2 cores and the CUDA one over an hour; the subset a
few minutes. ``import mmcv.ops`` works unchanged: every op left out keeps its
Python binding, which raises one line naming the op and
``scripts/bootstrap.sh --all-ops`` (the way mmcv itself says "implementation
for device cuda:0 not found" for a kernel it lacks).

How: the files of an op are its C++ entry point (``pytorch/OP.cpp``), its CPU
kernel (``pytorch/cpu/OP.cpp``) and its CUDA kernel (``pytorch/cuda/OP_cuda.cu``).
The files of the ops kept stay, and so does every file that defines a name a
kept file calls directly rather than through mmcv's device registry (in 2.1.0
nms_rotated and spconv's kernels are such), until nothing changes; the rest
are deleted. ``pybind.cpp`` then binds each function whose definition is gone
to a function that raises; ``cudabind.cpp``, which registers every CUDA
kernel, loses every definition that calls a function no longer defined
anywhere and every registration of a dropped function, until nothing
changes. Definitions are found in the sources themselves, so the pruning
follows mmcv's code rather than a list kept here.

    python scripts/mmcv_subset.py MMCV_SRC [--ops nms,focal_loss,...]
    python scripts/mmcv_subset.py --key [--ops ...]    the op set's name in the wheel cache
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

# The ops the suite's configs call: NMS at every evaluation, sigmoid focal loss in
# mmdet's FCOS heads on CUDA, (modulated) deformable convolution in the R-101-DCN rows.
DETECTION_OPS = ("nms", "focal_loss", "deform_conv", "modulated_deform_conv")
# Every build keeps these: the compiler and CUDA versions mmcv reports.
ALWAYS = ("info",)
KEYWORDS = {"if", "for", "while", "switch", "return", "sizeof", "catch", "defined"}
_DEF = re.compile(r"\b([A-Za-z_]\w*)\s*(?:<[^<>;{}()]*>)?\s*\([^;{}]*\)\s*(?:const\s*)?\{")
_NAME = re.compile(r"([A-Za-z_]\w*)\s*\(")
_COMMENT = re.compile(r'//[^\n]*|/\*.*?\*/|("(?:\\.|[^"\\\n])*")', re.S)
_MACRO = re.compile(r"[A-Z_][A-Z0-9_]*\s*\(")


def defined_names(source: str) -> set[str]:
    """Names of functions whose bodies this C++/CUDA source holds (by shape)."""
    code = re.sub(r"(?m)^\s*#.*$", "", _strip_comments(source))  # macros have no ';' to stop at
    return {m.group(1) for m in _DEF.finditer(code)} - KEYWORDS


def top_level_definitions(source: str) -> set[str]:
    """Functions, structs and classes a file defines outside any function or
    struct (namespaces are looked into): what another file can call. A helper
    inside a struct, such as filtered_lrelu's clamp(), is not."""
    names = set()
    for chunk in top_level_chunks(source):
        code = re.sub(r"(?m)^\s*#.*$", "", _strip_comments(chunk)).strip()
        if "{" not in code:
            continue
        ns = re.match(r"namespace\s*\w*\s*\{", code)
        if ns:
            names |= top_level_definitions(code[ns.end():code.rindex("}")])
            continue
        kind = re.match(r"(?:template\s*<[^{;]*>\s*)?(?:struct|class)\s+([A-Za-z_]\w*)", code)
        name = kind.group(1) if kind else _head_name(code[:code.index("{")])
        if name and name not in KEYWORDS:
            names.add(name)
    return names


def _strip_comments(source: str) -> str:
    # one pass, leftmost first: a '/*' inside a line comment or a '//' inside
    # a string literal is not a comment
    return _COMMENT.sub(lambda m: m.group(1) or " ", source)


def top_level_chunks(source: str) -> list[str]:
    """The file cut into its top-level statements: prototypes, definitions,
    macro calls, preprocessor lines (comments stay with what follows them)."""
    chunks, start, depth, i, n = [], 0, 0, 0, len(source)
    while i < n:
        c = source[i]
        if source.startswith("//", i):
            i = source.find("\n", i)
            i = n if i < 0 else i
            continue
        if source.startswith("/*", i):
            i = source.find("*/", i) + 2
            continue
        if c == "#" and depth == 0 and source[start:i].strip() == "":
            end = source.find("\n", i)
            end = n if end < 0 else end
            chunks.append(source[start:end + 1])
            start = i = end + 1
            continue
        if c in "\"'":
            j = i + 1
            while j < n and source[j] != c:
                j += 2 if source[j] == "\\" else 1
            i = j + 1
            continue
        if c in "({[":
            depth += 1
        elif c in ")}]":
            depth -= 1
            # a function body, or a macro call such as REGISTER_DEVICE_IMPL(...),
            # which mmcv sometimes writes without its semicolon
            if depth == 0 and (c == "}" or _MACRO.match(_strip_comments(source[start:i]).lstrip())):
                end = i + 1
                while end < n and source[end] in " \t;":
                    end += 1
                chunks.append(source[start:end])
                start = i = end
                continue
        elif c == ";" and depth == 0:
            chunks.append(source[start:i + 1])
            start = i + 1
        i += 1
    chunks.append(source[start:])
    return chunks


def _head_name(chunk: str) -> str | None:
    code = _strip_comments(chunk)
    m = _NAME.search(code)
    return m.group(1) if m else None


def prune(cudabind: str, defined_elsewhere: set[str]) -> tuple[str, list[str]]:
    """cudabind.cpp without what would call an undefined function, and the
    names of the functions it dropped."""
    chunks = top_level_chunks(cudabind)
    bodies = {}
    for k, chunk in enumerate(chunks):
        code = _strip_comments(chunk)
        if "{" in code and not code.lstrip().startswith("#"):
            name = _head_name(chunk)
            if name and name not in KEYWORDS:
                bodies[k] = name
    defined = defined_elsewhere | set(bodies.values())
    missing = set()
    for chunk in chunks:
        code = _strip_comments(chunk).strip()
        name = _head_name(code) if code.endswith(";") else None
        if name and name != "REGISTER_DEVICE_IMPL" and name not in defined:
            missing.add(name)
    dropped: set[int] = set()
    changed = True
    while changed:
        changed = False
        pattern = re.compile(r"\b(" + "|".join(map(re.escape, sorted(missing))) + r")\b") if missing else None
        for k, chunk in enumerate(chunks):
            if k in dropped or pattern is None:
                continue
            code = _strip_comments(chunk)
            is_body = k in bodies
            is_register = code.strip().startswith("REGISTER_DEVICE_IMPL")
            if not (is_body or is_register):
                continue
            body = code[code.find("{"):] if is_body else code[code.find("(") + 1:]
            if pattern.search(body):
                dropped.add(k)
                if is_body and bodies[k] not in missing:
                    missing.add(bodies[k])
                    changed = True
    kept = "".join(c for k, c in enumerate(chunks) if k not in dropped)
    return kept, sorted(bodies[k] for k in dropped if k in bodies)


def _strip_strings(code: str) -> str:
    return re.sub(r'"(?:\\.|[^"\\\n])*"', '""', code)


def op_of(path: Path) -> str:
    """The op a source file belongs to: nms for pytorch/nms.cpp, cpu/nms.cpp and cuda/nms_cuda.cu."""
    name = path.stem
    for suffix in ("_cuda", "_cpu"):
        if name.endswith(suffix):
            return name[:-len(suffix)]
    return name


def sources_of(src: Path) -> list[Path]:
    """The files mmcv's setup.py compiles for CPU and CUDA ops, less the two binding files."""
    base = src / "mmcv/ops/csrc/pytorch"
    files = [*base.glob("*.cpp"), *(base / "cpu").glob("*.cpp"), *(base / "cuda").glob("*.cu")]
    return sorted(p for p in files if p.name not in ("pybind.cpp", "cudabind.cpp"))


def known_ops(src: Path) -> list[str]:
    base = src / "mmcv/ops/csrc/pytorch"
    ops = {op_of(p) for p in base.glob("*.cpp") if p.name != "pybind.cpp"}
    ops |= {op_of(p) for p in (base / "cuda").glob("*.cu")}
    return sorted(ops - set(ALWAYS))


def key(ops: list[str]) -> str:
    """The op set's name in a build key: a wheel built for one set is never handed to another."""
    return "ops-" + "-".join(sorted(set(ops)))


_REGISTER = re.compile(r"REGISTER_DEVICE_IMPL\(\s*([A-Za-z_]\w*)\s*,\s*\w+\s*,\s*([A-Za-z_]\w*)\s*\)")


def kept_files(files: list[Path], ops: list[str], cudabind: str = "") -> tuple[list[Path], list[str]]:
    """The files of ``ops`` and those they reach, and the ops the latter belong to. A kept
    file reaches a file that defines a name it calls directly, and a file that registers
    a kernel for one of its entry points; through ``cudabind`` (the CUDA registrations),
    an entry point reaches the kernels its CUDA binding calls."""
    keep = set(ops) | set(ALWAYS)
    kept = [p for p in files if op_of(p) in keep]
    rest = [p for p in files if op_of(p) not in keep]
    texts = {p: p.read_text(errors="replace") for p in files}
    defines = {p: top_level_definitions(texts[p]) for p in files}
    # a helper type every file defines for itself (InternalType), or a macro
    # call that looked like a definition, links nothing
    seen: dict[str, int] = {}
    for names in defines.values():
        for name in names:
            seen[name] = seen.get(name, 0) + 1
    defines = {p: {n for n in names if seen[n] == 1 and not re.fullmatch(r"[A-Z0-9_]+", n)}
               for p, names in defines.items()}
    code = {p: _strip_strings(_strip_comments(t)) for p, t in texts.items()}
    bind_bodies = {}
    for chunk in top_level_chunks(cudabind):
        c = _strip_comments(chunk)
        if "{" in c and not c.lstrip().startswith("#"):
            bind_bodies[_head_name(chunk)] = c[c.find("{"):]
    bind_regs = _REGISTER.findall(_strip_comments(cudabind))
    grew = True
    while grew:
        grew = False
        entry = set().union(*(defines[p] for p in kept))
        text = " ".join(code[p] for p in kept)
        text += " ".join(bind_bodies.get(value, "") for k, value in bind_regs if k in entry)
        for p in list(rest):
            # a method call (x.clamp(...), p->clamp(...)) is not a call into that file
            calls = any(re.search(rf"(?<![\w.])(?<!->){re.escape(name)}\b", text) for name in defines[p])
            registers = any(k in entry for k, _ in _REGISTER.findall(code[p]))
            if calls or registers:
                rest.remove(p)
                kept.append(p)
                grew = True
    return sorted(kept), sorted({op_of(p) for p in kept} - keep)


_BINDING = re.compile(r'(m\.def\(\s*"([^"]+)"\s*,\s*&\s*([A-Za-z_]\w*)[^;]*;)', re.S)


def stub_bindings(pybind: str, defined: set[str], ops: list[str]) -> tuple[str, list[str]]:
    """pybind.cpp with every binding of a function no longer defined turned into one that
    raises a one-line error, and the Python names so bound."""
    stubbed = []

    def replace(m: re.Match) -> str:
        if m.group(3) in defined:
            return m.group(1)
        stubbed.append(m.group(2))
        msg = (f"{m.group(2)}: implementation not found: this mmcv was built with the ops "
               f"{', '.join(sorted(ops))} only; scripts/bootstrap.sh --all-ops builds every op")
        return (f'm.def("{m.group(2)}", [](py::args, py::kwargs) -> py::object {{ '
                f'throw std::runtime_error("{msg}"); }});')

    return _BINDING.sub(replace, pybind), stubbed


def trim(src: Path, ops: list[str]) -> list[str]:
    """Deletes the sources of the ops not kept and prunes the bindings; returns the
    CUDA registrations dropped from cudabind.cpp."""
    base = src / "mmcv/ops/csrc/pytorch"
    cuda = base / "cuda"
    if not (cuda / "cudabind.cpp").is_file():
        raise SystemExit(f"error: {src} is not an mmcv source tree (no {cuda}/cudabind.cpp); "
                         "pass the folder an mmcv sdist unpacks to")
    unknown = sorted(set(ops) - set(known_ops(src)))
    if unknown:
        raise SystemExit(f"error: no mmcv op named {', '.join(unknown)}; the ops are "
                         f"{', '.join(known_ops(src))}")
    files = sources_of(src)
    bind = cuda / "cudabind.cpp"
    kept, needed = kept_files(files, ops, bind.read_text())
    for p in set(files) - set(kept):
        p.unlink()
    if needed:
        print(f"[mmcv-subset] also kept, reached from the kept ops' C++: {', '.join(needed)}",
              file=sys.stderr)
    elsewhere = set()
    for path in kept:
        elsewhere |= defined_names(path.read_text(errors="replace"))
    pybind = base / "pybind.cpp"
    if pybind.is_file():
        text, stubbed = stub_bindings(pybind.read_text(), elsewhere, ops)
        pybind.write_text(text)
        if stubbed:
            print(f"[mmcv-subset] {len(stubbed)} Python bindings raise 'not found' (ops left out)", file=sys.stderr)
    text, dropped = prune(bind.read_text(), elsewhere)
    bind.write_text(text)
    return dropped


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", type=Path, nargs="?", help="an unpacked mmcv source tree (it is changed in place)")
    ap.add_argument("--ops", default=",".join(DETECTION_OPS), help="the ops to build (default: %(default)s)")
    ap.add_argument("--key", action="store_true", help="print the op set's name in the wheel cache and exit")
    args = ap.parse_args(argv)
    ops = [o.strip() for o in args.ops.split(",") if o.strip()]
    if args.key:
        print(key(ops))
        return 0
    if args.src is None:
        ap.error("give the mmcv source tree to trim (or --key)")
    dropped = trim(args.src, ops)
    print(f"[mmcv-subset] ops built: {', '.join(sorted(ops))}; "
          f"{len(dropped)} CUDA registrations dropped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
