"""Compiles every C, C++ and Go code block of README.md and docs/*.md against the current
header, wrapper and Go package, so that a stale snippet fails the test command. (Rust blocks are
doctests: src/lib.rs includes README.md.)

A block is a fragment of a program: it is compiled inside a function (`void snippet(void)` in
C, `int snippet()` in C++, `func snippet() error` in Go), its `#include` / `import` lines hoisted
to the top. A C block with `int main(` is a whole program: it is also linked against
target/release/libadamw.a and run, and must exit 0. What it leaves to the reader (the caller's buffers and functions) is declared in an
HTML comment just before the block, which the rendered page does not show, and functions the
block defines at the start of a line are compiled at file scope:

    <!-- snippet context: float *d_weights; int steps; -->

Usage: python3 tools/check_snippets.py  (from anywhere; needs cc, c++ and Go, as the test
command installs them)."""
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BLOCK = re.compile(
    r"(?:<!-- snippet context:(?P<context>.*?)-->\s*\n)?^(?P<indent> *)```(?P<lang>c|cpp|go)\n(?P<code>.*?)^ *```", re.S | re.M)
# A function defined at the start of a line in a block: compiled at file scope.
FUNCTION = re.compile(r"^(?:static |void |int |double |float )[^\n;]*\)\s*\{\n.*?^\}\n?", re.S | re.M)

C_HEAD = "#include <stdint.h>\n#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\n#include <adamw.h>\n"
CPP_HEAD = "#include <cstddef>\n#include <cstdint>\n#include <iostream>\n#include <vector>\n#include <adamw/adamw.hpp>\n"


def split_hoisted(code, prefix):
    """The lines starting with `prefix` (includes, imports) and the rest."""
    hoisted = [line for line in code.splitlines() if line.startswith(prefix)]
    body = [line for line in code.splitlines() if not line.startswith(prefix)]
    return "\n".join(hoisted), "\n".join(body)


def compile_c(code, context, cxx, workdir):
    whole_program = not cxx and re.search(r"^int main\(", code, re.M)
    functions = "\n".join(m.group(0) for m in FUNCTION.finditer(code))
    code = FUNCTION.sub("", code)
    includes, body = split_hoisted(code, "#include")
    head = CPP_HEAD if cxx else C_HEAD
    function = "int snippet() {\n%s\nreturn 0;\n}\n" if cxx else "void snippet(void) {\n%s\n}\n"
    source = head + includes + "\n" + context + "\n" + functions + "\n" + function % body
    path = os.path.join(workdir, "snippet.cpp" if cxx else "snippet.c")
    with open(path, "w") as f:
        f.write(source)
    compiler = ["c++", "-std=c++17"] if cxx else ["cc", "-std=c11"]
    flags = ["-fsyntax-only", "-fopenmp", "-Wall", "-Wextra", "-Werror", "-Wno-unused-variable", "-Wno-unused-but-set-variable",
             "-Wno-unused-parameter", "-I" + os.path.join(ROOT, "include"), "-I" + os.path.join(ROOT, "bindings/cpp/include")]
    if whole_program:
        # A whole program: linked against this checkout's library and run; it must exit 0.
        program = os.path.join(workdir, "program")
        libs = [os.path.join(ROOT, "target/release/libadamw.a"), "-lm", "-ldl", "-lpthread"]
        built = subprocess.run(compiler + [f for f in flags if f != "-fsyntax-only"] + [path, "-o", program] + libs,
                               capture_output=True, text=True)
        return (built if built.returncode else subprocess.run([program], capture_output=True, text=True)), source
    return subprocess.run(compiler + flags + [path], capture_output=True, text=True), source


def compile_go(code, context, workdir):
    imports, body = split_hoisted(code, "import ")
    module = os.path.join(workdir, "gosnippet")
    os.makedirs(module, exist_ok=True)
    with open(os.path.join(module, "go.mod"), "w") as f:
        f.write("module snippet\n\ngo 1.21\n\nrequire libadamw/go v0.0.0\n\nreplace libadamw/go => %s\n"
                % os.path.join(ROOT, "bindings/go"))
    source = ("package main\n\n%s\nimport \"errors\"\n\nvar _ = errors.Is\n\n%s\n\nfunc snippet() error {\n%s\nreturn nil\n}\n\n"
              "func main() { _ = snippet() }\n" % (imports, context, body))
    with open(os.path.join(module, "main.go"), "w") as f:
        f.write(source)
    return subprocess.run(["go", "vet", "."], cwd=module, capture_output=True, text=True), source


def main():
    files = [os.path.join(ROOT, "README.md")] + sorted(
        os.path.join(ROOT, "docs", f) for f in os.listdir(os.path.join(ROOT, "docs")) if f.endswith(".md"))
    failures = checked = 0
    with tempfile.TemporaryDirectory() as workdir:
        for path in files:
            text = open(path, encoding="utf-8").read()
            for m in BLOCK.finditer(text):
                line = text[: m.start("code")].count("\n")
                lang, context = m.group("lang"), (m.group("context") or "").strip()
                indent = len(m.group("indent"))
                code = "\n".join(line[indent:] for line in m.group("code").splitlines()) + "\n"
                if lang == "go":
                    result, source = compile_go(code, context, workdir)
                else:
                    result, source = compile_c(code, context, lang == "cpp", workdir)
                checked += 1
                where = "%s:%d (%s)" % (os.path.relpath(path, ROOT), line, lang)
                if result.returncode != 0:
                    failures += 1
                    print("FAILED %s\n%s\n--- as compiled:\n%s" % (where, result.stdout + result.stderr, source))
                else:
                    print("ok     %s" % where)
    print("%d snippets compiled, %d failed" % (checked, failures))
    return 1 if failures or checked == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
