"""Prints the URI of the machine's configured APT source for a Debian suite (its `main`
component), from /etc/apt/sources.list and sources.list.d (one-line `.list` and deb822
`.sources` files); exits 1 if none serves it. Usage: python3 tools/debian_mirror.py bookworm"""
import glob
import sys


def one_line_entries(path):
    for line in open(path, encoding="utf-8", errors="replace"):
        words = line.split("#", 1)[0].split()
        if len(words) >= 4 and words[0] == "deb":
            words = [w for w in words[1:] if not w.startswith("[")]  # drop [options]
            if len(words) >= 3:
                yield words[0], [words[1]], words[2:]


def deb822_entries(path):
    for stanza in open(path, encoding="utf-8", errors="replace").read().split("\n\n"):
        fields = {}
        for line in stanza.splitlines():
            if ":" in line and not line.startswith(("#", " ")):
                key, value = line.split(":", 1)
                fields[key.strip().lower()] = value.split()
        if "deb" in fields.get("types", []) and fields.get("enabled", ["yes"]) != ["no"]:
            for uri in fields.get("uris", []):
                yield uri, fields.get("suites", []), fields.get("components", [])


def main():
    suite = sys.argv[1]
    entries = []
    for path in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")):
        try:
            entries += list(one_line_entries(path))
        except OSError:
            pass
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        entries += list(deb822_entries(path))
    for uri, suites, components in entries:
        if suite in suites and "main" in components:
            print(uri)
            return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
