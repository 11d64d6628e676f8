"""Trim an unpacked mmcv source tree so that only some ops get CUDA kernels.

Why: mmcv 2.1.0 compiles 59 CUDA files; a detector needs four of them (NMS,
sigmoid focal loss, deformable and modulated deformable convolution). The full
build takes about 8 minutes on 16 cores and over an hour on a 2-core login
node; the subset takes a few minutes. Every op keeps its C++ entry point and
its CPU kernel, so ``import mmcv.ops`` works unchanged; an op left out fails on
a CUDA tensor with mmcv's own "implementation for device cuda:0 not found".

How: the CUDA files of the ops not kept are deleted, except those that a C++
entry point or a kept CUDA file calls directly rather than through mmcv's
registry (nms_rotated, nms_quadri and spconv's files in 2.1.0); then
``cudabind.cpp``, which registers every CUDA kernel, is pruned. A definition that calls a
function no longer defined anywhere is dropped, then every registration of a
dropped function, until nothing changes. Definitions are found in the sources
themselves, so the pruning follows mmcv's code rather than a list kept here.

    python scripts/mmcv_cuda_subset.py MMCV_SRC [--ops nms,focal_loss,...]
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

DETECTION_OPS = ("nms", "focal_loss", "deform_conv", "modulated_deform_conv")
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


def _op_name(cu: Path) -> str:
    return cu.name[:-len("_cuda.cu")] if cu.name.endswith("_cuda.cu") else cu.stem


def trim(src: Path, ops: list[str]) -> list[str]:
    cuda = src / "mmcv/ops/csrc/pytorch/cuda"
    if not (cuda / "cudabind.cpp").is_file():
        raise SystemExit(f"error: {src} is not an mmcv source tree (no {cuda}/cudabind.cpp); "
                         "pass the folder an mmcv sdist unpacks to")
    sources = {_op_name(cu): cu for cu in cuda.glob("*.cu")}
    unknown = sorted(set(ops) - set(sources))
    if unknown:
        raise SystemExit(f"error: no CUDA source for {', '.join(unknown)}; the ops are "
                         f"{', '.join(sorted(sources))}")
    # some C++ entry points call a CUDA function directly (nms_rotated.cpp,
    # spconv_ops.cpp, ...) rather than through the registry, and some CUDA
    # files call into others: those kernels stay too
    callers = [_strip_comments(p.read_text(errors="replace")) for p in (src / "mmcv/ops/csrc/pytorch").glob("*.cpp")]
    callers += [_strip_comments(sources[op].read_text(errors="replace")) for op in ops]
    defines = {op: top_level_definitions(cu.read_text(errors="replace")) for op, cu in sources.items()}
    # a helper type every file defines for itself (InternalType), or a macro
    # call that looked like a definition, links nothing
    seen: dict[str, int] = {}
    for names in defines.values():
        for name in names:
            seen[name] = seen.get(name, 0) + 1
    defines = {op: {n for n in names if seen[n] == 1 and not re.fullmatch(r"[A-Z0-9_]+", n)}
               for op, names in defines.items()}
    needed: list[str] = []
    grew = True
    while grew:
        grew = False
        text = " ".join(callers)
        for op in sorted(set(sources) - set(ops) - set(needed)):
            # a method call (x.clamp(...), p->clamp(...)) is not a call into that file
            if any(re.search(rf"(?<![\w.])(?<!->){re.escape(name)}\b", text) for name in defines[op]):
                needed.append(op)
                callers.append(_strip_comments(sources[op].read_text(errors="replace")))
                grew = True
    for op, cu in sources.items():
        if op not in ops and op not in needed:
            cu.unlink()
    if needed:
        print(f"[mmcv-subset] also kept, called directly from mmcv's C++: {', '.join(sorted(needed))}",
              file=sys.stderr)
    elsewhere = set()
    for path in [*cuda.glob("*.cu"), *(src / "mmcv/ops/csrc/pytorch").glob("*.cpp"),
                 *(src / "mmcv/ops/csrc/pytorch/cpu").glob("*.cpp")]:
        elsewhere |= defined_names(path.read_text(errors="replace"))
    bind = cuda / "cudabind.cpp"
    text, dropped = prune(bind.read_text(), elsewhere)
    bind.write_text(text)
    return dropped


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", type=Path, help="an unpacked mmcv source tree (it is changed in place)")
    ap.add_argument("--ops", default=",".join(DETECTION_OPS),
                    help="ops that keep their CUDA kernels (default: %(default)s)")
    args = ap.parse_args(argv)
    ops = [o.strip() for o in args.ops.split(",") if o.strip()]
    dropped = trim(args.src, ops)
    print(f"[mmcv-subset] CUDA kernels kept for {', '.join(ops)}; "
          f"{len(dropped)} CUDA bindings dropped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
