#!/usr/bin/env bash
# Splits a multi-document CRD YAML stream (stdin, e.g. `weir crds`) into one file per
# CustomResourceDefinition under DIR, named after its metadata.name
# (routes.weir.dev.yaml, plugins.weir.dev.yaml, consumers.weir.dev.yaml). Each file starts
# with `---`. Fails if the stream holds no CRD or a document without metadata.name.
set -euo pipefail
dir="${1:?usage: split-crds.sh DIR < crds.yaml}"
mkdir -p "$dir"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# Cut the stream at `---` lines into numbered documents; skip empty ones.
awk -v tmp="$tmp" '
  /^---[[:space:]]*$/ { n++; next }
  { print > (tmp "/doc-" sprintf("%04d", n + 0) ".yaml") }
' || true
count=0
for doc in "$tmp"/doc-*.yaml; do
  [ -e "$doc" ] || continue
  grep -q '[^[:space:]]' "$doc" || continue
  # metadata.name: the first two-space-indented `name:` after the top-level `metadata:`.
  name="$(awk '
    /^metadata:/ { in_meta = 1; next }
    in_meta && /^[^[:space:]]/ { in_meta = 0 }
    in_meta && /^  name:/ { sub(/^  name:[[:space:]]*/, ""); gsub(/["'\'']/, ""); print; exit }
  ' "$doc")"
  if [ -z "$name" ]; then
    echo "split-crds: a document has no metadata.name:" >&2
    head -n 5 "$doc" >&2
    exit 1
  fi
  { echo '---'; cat "$doc"; } > "$dir/$name.yaml"
  echo "wrote $dir/$name.yaml"
  count=$((count + 1))
done
if [ "$count" -eq 0 ]; then
  echo "split-crds: no documents on stdin" >&2
  exit 1
fi
