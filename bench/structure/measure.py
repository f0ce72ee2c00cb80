#!/usr/bin/env python3
"""Measures the shape of the source tree: the longest classes and functions
per folder, lines per folder, files that prepare SQL. Used for the figures in
issue notes about structure; run it on two checkouts to compare.

    python3 bench/structure/measure.py [ROOT]

A function is a brace block whose header (the text since the previous ';',
'{' or '}') holds a parameter list and is not a control statement; a lambda
counts as a function of its own, nested inside the one that holds it. A class
is a block whose header starts with struct or class. Lines are counted from
the header's first line to the closing brace.
"""
import os
import re
import sys

CONTROL = re.compile(r'^\s*(if|for|while|switch|catch|do|else|try|return|namespace|extern)\b')
CLASS = re.compile(r'^\s*(template\s*<[^{]*>\s*)?(struct|class|union)\s+([A-Za-z_][\w:]*)')
NAME = re.compile(r'([A-Za-z_~][\w:~]*(?:operator\W+)?)\s*\([^()]*(?:\([^()]*\)[^()]*)*\)\s*'
                  r'(const|noexcept|override|final|mutable|->[^{]*|\s)*$')


def strip(text):
    """Blanks comments, string and char literals, keeping newlines."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith('//', i):
            j = text.find('\n', i)
            j = n if j < 0 else j
            out.append(' ' * (j - i)); i = j
        elif text.startswith('/*', i):
            j = text.find('*/', i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r'[^\n]', ' ', text[i:j])); i = j
        elif c == 'R' and text.startswith('R"', i) and (i == 0 or not text[i - 1].isalnum()):
            m = re.match(r'R"([^(\s]*)\(', text[i:])
            if not m:
                out.append(c); i += 1; continue
            end = ')' + m.group(1) + '"'
            j = text.find(end, i + m.end())
            j = n if j < 0 else j + len(end)
            out.append('""' + re.sub(r'[^\n]', ' ', text[i + 2:j])); i = j
        elif c in '"\'':
            if c == "'" and i > 0 and text[i - 1].isalnum():  # digit separator 1'000
                out.append(' '); i += 1; continue
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == '\\' else 1
            out.append(c + ' ' * (j - i - 1) + c); i = j + 1
        else:
            out.append(c); i += 1
    return ''.join(out)


def blocks(path):
    text = strip(open(path, encoding='utf-8', errors='replace').read())
    stack, header_start, found = [], 0, []
    line = 1
    for i, c in enumerate(text):
        if c == '\n':
            line += 1
        elif c in ';':
            header_start = i + 1
        elif c == '{':
            header = text[header_start:i]
            first = line - header.rstrip().count('\n') + (len(header) - len(header.lstrip()) and 0)
            lead = header.lstrip()
            first = line - header[len(header) - len(lead):].count('\n') if lead else line
            kind = None
            h = ' '.join(header.split())
            m = CLASS.match(h)
            if m and '(' not in h.split(m.group(3), 1)[0]:
                kind, name = 'class', m.group(3)
            elif CONTROL.match(h) is None and (NAME.search(h) or re.search(r'\]\s*(\([^)]*\))?\s*(mutable\s*)?(->[^{]*)?$', h)):
                nm = NAME.search(h)
                kind, name = 'function', (nm.group(1) if nm else 'lambda')
                if re.search(r'\]\s*(\([^)]*\))?\s*(mutable\s*)?(->[^{]*)?$', h) and (not nm or h.rstrip().endswith(']')):
                    name = 'lambda'
                elif '[' in h and re.search(r'\[[^\]]*\]\s*\(', h):
                    name = 'lambda in ' + (re.findall(r'([A-Za-z_][\w:]*)\s*\(', h) or ['?'])[0]
            stack.append((kind, name if kind else None, first))
            header_start = i + 1
        elif c == '}':
            if stack:
                kind, name, first = stack.pop()
                if kind:
                    found.append((kind, name, path, first, line - first + 1))
            header_start = i + 1
    return found


def sources(root, folder):
    out = []
    for d, _, files in os.walk(os.path.join(root, folder)):
        out += [os.path.join(d, f) for f in files if f.endswith(('.cpp', '.h', '.cu', '.cuh'))]
    return sorted(out)


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else '.'
    folders = [f for f in ('controller', 'worker', 'cli', 'adapt', 'pipeline', 'db', 'dashboard',
                           'trainer', 'searchspace', 'export') if os.path.isdir(os.path.join(root, f))]
    print(f'{"folder":12} {"lines":>6}  {"largest class":48} {"longest function":48}')
    for f in folders:
        files = sources(root, f)
        lines = sum(open(p, encoding='utf-8', errors='replace').read().count('\n') for p in files)
        found = [b for p in files for b in blocks(p)]
        def best(kind):
            c = [b for b in found if b[0] == kind]
            if not c:
                return '-'
            k, name, path, first, n = max(c, key=lambda b: b[4])
            return f'{n} {name} ({os.path.relpath(path, root)}:{first})'
        print(f'{f:12} {lines:>6}  {best("class"):48} {best("function"):48}')
    sql = [os.path.relpath(p, root) for f in folders for p in sources(root, f)
           if re.search(r'sqlite3_prepare|[.>]prepare\s*\(', open(p, encoding='utf-8', errors='replace').read())]
    print(f'files that prepare SQL ({len(sql)}): {" ".join(sql)}')


if __name__ == '__main__':
    main()
