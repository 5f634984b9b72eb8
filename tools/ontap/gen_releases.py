#!/usr/bin/env python3
"""Generate the ONTAP release definitions drover's client and simulator check requests against.

NetApp publishes, per ONTAP release, a Python client (`netapp-ontap` on PyPI) generated from
that release's REST API definition. Each resource schema in it lists the fields a GET may ask
for (`gettable_fields`), a PATCH may set (`patchable_fields`) and a POST may send
(`postable_fields`), and the values each enum field takes. This script reads those lists —
parsing the package's source, never importing it — for the resources drover uses, and writes
one compact file per release:

    plugins/ontap/releases/<release>.json

Query parameters are not in the schemas. They come from two places: the ones every collection
and mutation takes (ONTAP-REST.md §1.4–1.6, declared below as STANDARD_QUERY) and the ones each
method's own documentation names (its examples' URLs, and quoted names in sentences about query
parameters or flags), read from the package.

    tools/ontap/gen_releases.py              # every release in RELEASES
    tools/ontap/gen_releases.py 9.16.1.0     # one

Wheels are downloaded with pip into ~/.cache/drover/netapp-ontap/ once.
"""

import ast
import json
import os
import re
import subprocess
import sys
import zipfile

# The supported range (docs/ontap.md says why): each ONTAP release NetApp still supports, by the
# client package published for it. 9.11.1 has only a release candidate on PyPI; a 9.11 cluster
# is checked against 9.10.1's definitions (fields are added between releases, not removed, so
# the older list is the safe one).
RELEASES = [
    "9.10.1.0", "9.12.1.0", "9.13.1.0", "9.14.1.0", "9.15.1.1",
    "9.16.1.0", "9.17.1.0", "9.18.1.0", "9.19.1.0",
]

# Resource module -> what drover calls it. Only the resources drover or its simulator serve.
RESOURCES = {
    "cluster": "cluster",
    "job": "job",
    "cluster_peer": "cluster_peer",
    "svm": "svm",
    "svm_peer": "svm_peer",
    "snapmirror_relationship": "snapmirror_relationship",
    "snapmirror_transfer": "snapmirror_transfer",
    "snapmirror_policy": "snapmirror_policy",
    "volume": "volume",
    "snapshot": "snapshot",
}

# ONTAP-REST.md §1.4 (fields, order_by), §1.5 (max_records, return_records, start), §1.6
# (return_timeout, return_records on mutations, validate_only on relationship POST/PATCH).
STANDARD_QUERY = {
    "get_collection": ["fields", "max_records", "return_records", "return_timeout", "order_by"],
    "get": ["fields", "return_timeout"],
    "post": ["return_timeout", "return_records"],
    "patch": ["return_timeout"],
    "delete": ["return_timeout"],
}
EXTRA_QUERY = {("snapmirror_relationship", "post"): ["validate_only"],
               ("snapmirror_relationship", "patch"): ["validate_only"]}

CACHE = os.path.expanduser(os.environ.get("DROVER_PCL_CACHE", "~/.cache/drover/netapp-ontap"))
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "plugins", "ontap", "releases")


def wheel(version):
    d = os.path.join(CACHE, version)
    found = [f for f in os.listdir(d)] if os.path.isdir(d) else []
    if not any(f.endswith(".whl") for f in found):
        os.makedirs(d, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        f"netapp-ontap=={version}", "-d", d], check=True)
    return os.path.join(d, next(f for f in os.listdir(d) if f.endswith(".whl")))


class Package:
    def __init__(self, path):
        self.zip = zipfile.ZipFile(path)
        self.modules = {}

    def module(self, dotted):
        if dotted not in self.modules:
            src = self.zip.read(dotted.replace(".", "/") + ".py").decode()
            self.modules[dotted] = ast.parse(src)
        return self.modules[dotted]

    def schema(self, dotted, cls=None):
        """The schema class of a module: its field lists and where each nested field points."""
        tree = self.module(dotted)
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and node.name.endswith("Schema") and (cls is None or node.name == cls):
                return Schema(self, node)
        raise KeyError(f"{dotted}: no schema class {cls or ''}")


def nested_target(call):
    """`Nested("mod.Class")`, `Nested(lambda: lazy_import_schema("mod", "Class"))`, or a List of one."""
    if not isinstance(call, ast.Call):
        return None
    name = call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", "")
    if name == "List" and call.args:
        return nested_target(call.args[0])
    if name != "Nested" or not call.args:
        return None
    arg = call.args[0]
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        mod, _, cls = arg.value.rpartition(".")
        return mod, cls
    if isinstance(arg, ast.Lambda) and isinstance(arg.body, ast.Call) and len(arg.body.args) == 2:
        return tuple(a.value for a in arg.body.args)
    return None


def enum_values(call):
    for kw in getattr(call, "keywords", []):
        if kw.arg == "validate" and isinstance(kw.value, ast.Call):
            fn = kw.value.func
            if getattr(fn, "id", getattr(fn, "attr", "")) == "enum_validation" and kw.value.args:
                return ast.literal_eval(kw.value.args[0])
    if isinstance(call, ast.Call) and call.args and isinstance(call.args[0], ast.Call):
        return enum_values(call.args[0])
    return None


class Schema:
    def __init__(self, pkg, node):
        self.pkg = pkg
        self.lists = {}
        self.nested = {}
        self.enums = {}
        for stmt in node.body:
            if not isinstance(stmt, ast.Assign) or not isinstance(stmt.targets[0], ast.Name):
                continue
            target = stmt.targets[0].id
            if target in ("gettable_fields", "patchable_fields", "postable_fields"):
                self.lists[target.split("_")[0]] = ast.literal_eval(stmt.value)
            elif isinstance(stmt.value, ast.Call):
                key = target
                for kw in stmt.value.keywords:
                    if kw.arg == "data_key" and isinstance(kw.value, ast.Constant):
                        key = kw.value.value
                if nested_target(stmt.value):
                    self.nested[key] = nested_target(stmt.value)
                values = enum_values(stmt.value)
                if values:
                    self.enums[key] = values

    def fields(self, kind, depth=0, seen=()):
        """Every dotted field of this kind (get, patch, post), nested objects expanded."""
        out = {}
        for f in self.lists.get(kind, []):
            head = f.split(".")[0]
            if head == "links" or f.endswith(".links"):
                continue
            out.setdefault(f, self.enums.get(f))
            if "." in f or head not in self.nested or depth >= 4:
                continue
            mod, cls = self.nested[head]
            if (mod, cls) in seen:
                continue
            try:
                inner = self.pkg.schema(mod, cls)
            except KeyError:
                continue
            for sub, values in inner.fields(kind, depth + 1, seen + ((mod, cls),)).items():
                out[f"{f}.{sub}"] = values
        return out


# Values the same sentences quote: booleans, and policy types ("async", "sync") that are enum
# values of the policy resource rather than of the relationship.
NOT_PARAMS = {"true", "false", "async", "sync"}
QUOTED = re.compile(r'["`]([a-z][a-z0-9_-]*)["`]')
URL = re.compile(r'(?:GET|POST|PATCH|DELETE)\s+"?/api/[^\s"?]*\?([^\s"]+)')


def documented_query(pkg, module, enum_words):
    """Query parameter names each method's documentation uses (values of enum fields, which the
    same sentences quote, left out; `force-failover` as the API spells it, `force_failover`)."""
    tree = pkg.module(f"netapp_ontap.resources.{module}")
    found = {}
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef) and not n.name.endswith("Schema")):
        for fn in (n for n in cls.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
            verb = {"get_collection": "get_collection", "get": "get", "post": "post", "post_collection": "post",
                    "patch": "patch", "patch_collection": "patch", "delete": "delete",
                    "delete_collection": "delete"}.get(fn.name)
            doc = ast.get_docstring(fn) or ""
            if not verb or not doc:
                continue
            names = found.setdefault(verb, set())
            for query in URL.findall(doc):
                for pair in query.split("&"):
                    k = pair.split("=")[0]
                    if re.fullmatch(r"[a-z][a-z0-9_]*", k):
                        names.add(k)
            for sentence in re.split(r"(?<=[.!?])\s+|\n", doc):
                if re.search(r"query (parameter|flag)|\bflags?\b", sentence):
                    names.update(n.replace("-", "_") for n in QUOTED.findall(sentence)
                                 if n not in NOT_PARAMS and n not in enum_words)
    return found


def generate(version):
    pkg = Package(wheel(version))
    release = ".".join(version.split(".")[:3])
    resources = {}
    for module, name in RESOURCES.items():
        tree = pkg.module(f"netapp_ontap.resources.{module}")
        path = next(ast.literal_eval(s.value) for c in tree.body if isinstance(c, ast.ClassDef)
                    for s in c.body if isinstance(s, ast.Assign) and getattr(s.targets[0], "id", "") == "_path")
        schema = pkg.schema(f"netapp_ontap.resources.{module}")
        get = schema.fields("gettable")
        doc = documented_query(pkg, module, {v for values in get.values() if values for v in values})
        query = {}
        for verb, standard in STANDARD_QUERY.items():
            names = set(standard) | doc.get(verb, set()) | set(EXTRA_QUERY.get((name, verb), []))
            # Real fields are filters on GET, not extra parameters.
            query[verb] = sorted(n for n in names if verb.startswith("get") is False or n not in get)
        resources[name] = {
            "path": re.sub(r"\{[^}]*\}", "{}", path),
            "get": sorted(get),
            "patch": sorted(schema.fields("patchable")),
            "post": sorted(schema.fields("postable")),
            "enums": {k: v for k, v in sorted(get.items()) if v},
            "query": query,
        }
    os.makedirs(OUT, exist_ok=True)
    target = os.path.join(OUT, f"{release}.json")
    with open(target, "w") as f:
        json.dump({"release": release, "source": f"netapp-ontap {version} (PyPI), generated by tools/ontap/gen_releases.py",
                   "resources": resources}, f, indent=None, separators=(",", ":"), sort_keys=True)
        f.write("\n")
    print(f"{target}: {sum(len(r['get']) for r in resources.values())} readable fields", file=sys.stderr)


if __name__ == "__main__":
    for v in sys.argv[1:] or RELEASES:
        generate(v)
