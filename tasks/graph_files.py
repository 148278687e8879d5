"""Graph files: DIMACS (`p edge N M`, `e U V`) and edge lists (`U V`, `U,V`, `U V WEIGHT`, a node alone), read
into networkx graphs or refused with the file, line and problem (`read_graph`)."""

from __future__ import annotations

import ast
import csv
import math
import re
from pathlib import Path

import networkx as nx

from .graphs import GraphError
from .text import bad_byte, plural, read_text, split_lines


def read_graph(path: str | Path, nonnegative_weights: bool = False) -> nx.Graph:
    """A DIMACS `.col` file (`p edge N M`, `e u v`, 1-based nodes, at most MAX_FILE_NODES) or an edge list
    (`u v`, `u,v` or `u v weight` per line, a node alone on a line, `#` comments (a `#` right after a letter belongs to
    the label: `C#`); networkx's `write_edgelist`
    output too). A `.col` name or a `p edge N M` or `e U V` line of numbers means DIMACS. JSON, XML and GML files
    are refused by name. A node label is a word without ; | < > =, brackets or control characters, and not '1-2'.
    Other notations are refused, not misread: lone labels joining two words with '-' or ':' ('a-b', '1:2') in a
    file with no edge, or whose two words are nodes too; a first line of two text labels over a file of numbers
    (a column header such as pandas' 'source,target'). Integer labels of up to 18 digits become integers
    ('01' stays the text '01'); quoted fields, as CSV writers quote them, lose their quotes. Pajek files are
    refused. `nonnegative_weights`: a negative weight is an error at its line (shortest paths need none). '-' reads
    stdin. Encodings as `tasks.text` reads them. Errors name the file and line."""
    stdin = str(path) == "-"
    path = Path("<stdin>" if stdin else path)
    try:
        lines = split_lines(read_text("-" if stdin else path))
    except OSError as exc:
        raise GraphError(f"{path}: cannot read ({exc.strerror or exc})") from None
    for number, line in enumerate(lines, 1):
        if (message := bad_byte(line)) is not None:
            raise GraphError(f"{path}:{number}: {message}")
        if (control := CONTROL.search(line)) is not None:  # a separator of some other format: refused, not guessed
            raise GraphError(f"{path}:{number}: control character {control.group()!r} at column "
                             f"{control.start() + 1}; fields are separated by spaces, tabs or commas")
    _refuse_other_formats(path, lines)
    marked = next((n for n, line in enumerate(lines, 1) if DIMACS_LINE.fullmatch(line.strip())), None)
    first = next((line.split()[0] for line in lines if line.split()), "")
    if path.suffix.lower() == ".col" or marked is not None and first in ("c", "p", "e"):
        graph = _read_dimacs(path, lines)
    elif marked is not None:
        try:
            graph = _read_dimacs(path, lines)
        except GraphError as exc:  # it does not start as DIMACS: maybe an edge list, so say why it was read so
            raise GraphError(f"{exc} (read as DIMACS because line {marked}, {lines[marked - 1].strip()!r}, is a "
                             "DIMACS line)") from None
    else:
        graph = _read_edge_list(path, lines, nonnegative_weights)
    if graph.number_of_nodes() == 0:
        raise GraphError(f"{path}: no nodes")
    return graph


def _refuse_other_formats(path: Path, lines: list[str]) -> None:
    """GraphError for a file in a graph format diffsolve does not read, named, with the networkx call that
    converts it (its first line would otherwise be reported as a bad node label)."""
    first = next((line.strip() for line in lines if line.strip()), "")
    kind = ("JSON" if first[:1] in ("{", "[") else "XML (GraphML or GEXF)" if first[:1] == "<"
            else "GML" if re.match(r'graph\s*\[|Creator\s+"', first) else None)  # not a node called 'graph'
    if kind is not None:
        raise GraphError(f"{path}: reads as {kind}; diffsolve reads edge lists ({EDGE_FORMS}) and DIMACS .col "
                         "files (convert with networkx: nx.write_edgelist(G, 'graph.txt', data=['weight']))")


# A line only DIMACS writes: 'p edge N M' (any problem word: a wrong one is then refused as DIMACS), 'e U V'. An
# edge list whose node is called 'e' or 'p' ('e a', 'p q') stays an edge list.
DIMACS_LINE = re.compile(r"p\s+\S+\s+[0-9]+\s+[0-9]+|e\s+[0-9]+\s+[0-9]+")


def _read_dimacs(path: Path, lines: list[str]) -> nx.Graph:
    graph, declared, declared_edges, edge_lines, p_line = nx.Graph(), None, 0, 0, 0
    for number, line in enumerate(lines, 1):
        fields = line.split()
        if not fields or fields[0] == "c":
            continue
        where = f"{path}:{number}"
        if fields[0] == "p":
            if (declared is not None or len(fields) != 4 or fields[1] not in DIMACS_FORMATS
                    or not COUNT.fullmatch(fields[2] + " " + fields[3])):
                raise GraphError(f"{where}: expected one 'p edge NODES EDGES' line, got {line.strip()!r}")
            declared, declared_edges, p_line = int(fields[2]), int(fields[3]), number
            if declared > MAX_FILE_NODES:
                raise GraphError(f"{where}: declares {declared:,} nodes; diffsolve reads graphs of at most "
                                 f"{MAX_FILE_NODES:,}")
            graph.add_nodes_from(range(1, declared + 1))
        elif fields[0] == "e":
            if declared is None:
                raise GraphError(f"{where}: edge before the 'p edge' line")
            if len(fields) != 3 or not COUNT.fullmatch(fields[1] + " " + fields[2]):
                raise GraphError(f"{where}: expected 'e U V', got {line.strip()!r}")
            u, v = int(fields[1]), int(fields[2])
            for node in (u, v):
                if not 1 <= node <= declared:
                    raise GraphError(f"{where}: node {node} outside 1..{declared}")
            if u == v:
                raise GraphError(f"{where}: self-loop on node {u}")
            graph.add_edge(u, v)
            edge_lines += 1
        else:
            raise GraphError(f"{where}: unknown DIMACS line {line.strip()!r}")
    if declared is None:
        raise GraphError(f"{path}: no 'p edge NODES EDGES' line (a DIMACS file needs one before its edges)")
    if edge_lines != declared_edges:
        e_lines = plural(edge_lines, "'e' line")
        raise GraphError(f"{path}:{p_line}: declares {plural(declared_edges, 'edge')} but the file has {e_lines}"
                         f"{' (truncated?)' if edge_lines < declared_edges else ''}")
    return graph


DIMACS_FORMATS = ("edge", "col")  # 'p edge N M' in the colouring benchmarks; some writers say 'p col N M'
COUNT = re.compile(r"[0-9]{1,18} [0-9]{1,18}")  # a DIMACS line's two numbers (ASCII digits: int() refuses '²')
MAX_FILE_NODES = 1_000_000  # a typo in a 'p' line must not fill the memory
INTEGER = re.compile(r"0|-?[1-9][0-9]{0,17}")  # labels that become integers ('01' and longer ones stay text)
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\x85\u2028\u2029]")  # control characters other than tab
COMMENT = re.compile(r"(?<![^\W\d_])#.*")  # a '#' after a letter is part of a label (C#); any other starts a comment
# What other edge notations leave in a field: an arrow, a ';' or '|' separator, GML/JSON brackets, '1-2', or a
# control character (a NUL would print as a space).
NOT_A_LABEL = re.compile(r"[;|<>=\[\](){}\x00-\x1f\x7f]|^\W*$|^[0-9]+-[0-9]+$")
# Alone on a line, a label joining two words with dashes or colons may be an edge in another notation ('a-b',
# '1:2'), or a node such as 'IL-6': `_read_edge_list` decides by the rest of the file.
JOINED = re.compile(r"^(\w+)(?:-+|:+|\u2013|\u2014)(\w+)$")
EDGE_FORMS = "an edge is 'U V' or 'U,V', a weighted one 'U V WEIGHT', a node alone 'U'"


def _read_edge_list(path: Path, lines: list[str], nonnegative_weights: bool) -> nx.Graph:
    graph = nx.Graph()
    first_line: dict[frozenset, int] = {}  # where each edge was first given
    weighted, plain = [], []  # line numbers of edges with and without a weight: a file has one kind
    opening = None  # the first line that gives something, and its nodes
    joined = []  # (line, label) of lone labels that read as 'a-b' or '1:2'
    for number, line in enumerate(lines, 1):
        nodes, weight = _edge_line(f"{path}:{number}", line, first=opening is None)
        if not nodes:
            continue
        if nonnegative_weights and weight is not None and weight < 0:
            raise GraphError(f"{path}:{number}: weight {weight:.12g} on edge {nodes[0]} {nodes[1]}; shortest paths "
                             "need non-negative weights")
        opening = opening or (number, nodes)
        if len(nodes) == 1:
            graph.add_node(nodes[0])
            if isinstance(nodes[0], str) and JOINED.match(nodes[0]):
                joined.append((number, nodes[0]))
            continue
        edge = frozenset(nodes)
        if edge in first_line and weight != (given := graph.edges[nodes].get("weight")):
            raise GraphError(f"{path}:{number}: edge {nodes[0]} {nodes[1]} again, with {_weight(weight)}; line "
                             f"{first_line[edge]} gives it {_weight(given)} (give each edge once)")
        first_line.setdefault(edge, number)
        graph.add_edge(*nodes, **({} if weight is None else {"weight": weight}))
        (plain if weight is None else weighted).append(number)
    if weighted and plain:
        first, later = sorted((weighted[0], plain[0]))
        kind = "without" if later == plain[0] else "with"
        raise GraphError(f"{path}:{later}: an edge {kind} a weight, unlike the edge on line {first} (give every "
                         "edge a weight, or none)")
    _refuse_other_notations(path, lines, graph, opening, joined)
    return graph


def _refuse_other_notations(path: Path, lines: list[str], graph: nx.Graph, opening: tuple | None,
                            joined: list[tuple[int, str]]) -> None:
    """GraphError for an edge list that reads as something other than what it means: lone 'a-b' labels where
    the file has no edge or both words are nodes too, or a first line of two text labels, each with a letter
    and found nowhere else, over a file of numbers (a column header)."""
    for number, label in joined:
        words = [int(w) if INTEGER.fullmatch(w) else w for w in JOINED.match(label).groups()]
        if graph.number_of_edges() == 0 or all(word in graph for word in words):
            raise GraphError(f"{path}:{number}: {label!r} alone on a line would be one node of that name; an edge "
                             "is written 'U V' or 'U,V'")
    number, nodes = opening or (0, [])
    if len(nodes) != 2 or not all(isinstance(node, str) and re.search(r"[^\W\d_]", node) for node in nodes):
        return
    others = [node for node in graph.nodes if node not in nodes]
    alone = all(set(graph[node]) <= set(nodes) for node in nodes)  # the line's labels appear nowhere else
    numbers = bool(others) and all(isinstance(node, int) for node in others)
    named = bool(others) and {node.lower() for node in nodes} <= HEADER_WORDS
    if alone and (numbers or named):
        why = "every other label is a number" if numbers else "column names that label no other edge"
        raise GraphError(f"{path}:{number}: {lines[number - 1].strip()!r} looks like a column header ({why}); "
                         f"{HEADER_HINT} (an edge between two named nodes: move it below the first line)")


def _weight(weight: float | None) -> str:
    return "no weight" if weight is None else f"weight {weight:.12g}"


HEADER_HINT = "remove the line or start it with '#'"
# Column names of edge-list exports (networkx, pandas, Gephi, Cytoscape): over named nodes, a first line of two
# of these that appear nowhere else is a header, not an edge.
HEADER_WORDS = {"source", "target", "from", "to", "src", "dst", "u", "v", "node1", "node2", "node_1", "node_2",
                "head", "tail", "start", "end", "weight"}


def _edge_line(where: str, line: str, first: bool = False) -> tuple[list, float | None]:
    """The nodes (none, one or two) and the weight (or None) on one edge-list line (`first`: the file's first
    line that gives something, where a column header would be)."""
    text = COMMENT.sub("", line).strip(" \t,")  # a CSV export may end its lines with an empty column
    if not text:
        return [], None
    if text.startswith("*"):  # Pajek's '*Vertices 3', '*Edges': another format, not a node called '*Vertices'
        raise GraphError(f"{where}: {line.strip()!r} is a Pajek section line; diffsolve reads edge lists "
                         f"({EDGE_FORMS}) and DIMACS .col files")
    fields = _fields(where, text)
    for field in fields[:2]:
        if NOT_A_LABEL.search(field):
            raise GraphError(f"{where}: {field!r} is not a node label ({EDGE_FORMS}; a label has a letter or "
                             f"digit and none of ; | < > = brackets or control characters), in {line.strip()!r}")
    nodes = [int(f) if INTEGER.fullmatch(f) else f for f in fields[:2]]
    if len(nodes) == 2 and nodes[0] == nodes[1]:
        raise GraphError(f"{where}: self-loop on node {nodes[0]}")
    if len(fields) < 3:
        return nodes, None
    rest = fields[2]
    if rest.startswith("{"):  # networkx's write_edgelist: "u v {'weight': 3}", "u v {}", numpy 2's np.float64(3)
        try:
            data = ast.literal_eval(re.sub(r"\bnp\.\w+\(([^()]*)\)", r"\1", rest))
        except (ValueError, SyntaxError):
            data = None
        if not isinstance(data, dict):
            raise GraphError(f"{where}: expected a networkx edge-data dict such as {{'weight': 3}}, got {rest!r}")
        if "weight" not in data:
            return nodes, None
        rest = str(data["weight"])
    if re.search(r"[,\s]", rest):
        raise GraphError(f"{where}: expected at most three fields ({EDGE_FORMS}), got {line.strip()!r}")
    try:
        weight = float(rest)
    except ValueError:
        raise GraphError(f"{where}: weight {rest!r} is not a number ({EDGE_FORMS})"
                         + (f"; if the line is a column header, {HEADER_HINT}" if first else "")) from None
    if not math.isfinite(weight):  # negative ones too (signed networks): only shortest paths refuse them
        raise GraphError(f"{where}: weight {rest} must be a finite number")
    return nodes, weight


def _fields(where: str, text: str) -> list[str]:
    """A line's fields: two labels and what follows them (the weight). Quoted fields, as CSV writers quote
    them ('"a","b"', '"New York" Boston'), lose their quotes and may hold separators."""
    if '"' not in text:
        return re.split(r"[,\s]+", text, maxsplit=2)
    delimiter = "," if "," in re.sub(r'"[^"]*"', "", text) else " "
    try:
        fields = [f.strip() for f in next(csv.reader([text.replace("\t", " ")], delimiter=delimiter,
                                                     skipinitialspace=True, strict=True))]
    except csv.Error:
        raise GraphError(f"{where}: unbalanced quotes in {text!r}") from None
    return fields[:2] + ([delimiter.join(fields[2:])] if len(fields) > 2 else [])


