#!/usr/bin/env bash
# Builds the broker of hmq's previous release (the commit in broker/tests/interop/previous/revision)
# from this repository's own history into target/previous/hmq, for the mixed-version cluster test
# (broker/tests/interop/cluster_mixed.sh). A debug build in its own target directory: it is only
# run, not measured. Skips the build when target/previous/hmq is already that revision.
#
# Needs the git history (a full clone): the commit is read with git archive, nothing is fetched.
set -euo pipefail
cd "$(dirname "$0")/.."
rev=$(tr -d '[:space:]' <broker/tests/interop/previous/revision)
out=${CARGO_TARGET_DIR:-target}/previous
if [[ -x $out/hmq && $(cat "$out/revision" 2>/dev/null) == "$rev" ]]; then
    echo "previous release $rev already built: $out/hmq"
    exit 0
fi
git cat-file -e "$rev^{commit}" 2>/dev/null || {
    echo "build-previous: commit $rev is not in this clone (a shallow clone?): fetch the history" \
        "(git fetch --unshallow) to run the mixed-version test" >&2
    exit 1
}
src=$out/src
rm -rf "$src"
mkdir -p "$src"
git archive "$rev" | tar -x -C "$src"
echo "building hmq at $rev (the previous release)"
cargo build --locked --manifest-path "$src/Cargo.toml" -p hmq --bin hmq --target-dir "$out/target"
cp "$out/target/debug/hmq" "$out/hmq"
echo "$rev" >"$out/revision"
rm -rf "$src"
echo "previous release: $out/hmq"
