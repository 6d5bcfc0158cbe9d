#!/usr/bin/env bash
# The package as a user installs it: `npm pack`, then the tarball installed into fresh projects with nothing
# but the registry (no repository files, no devDependencies): without optional dependencies (decode and
# compress with image codecs), as `npm install nnmedia` (onnxruntime-web, an optional dependency, runs the
# demo and eval), and with the optional peers onnxruntime-node and @ffmpeg-installer/ffmpeg (native demo,
# eval, video). Prints the installed size and time of each. Run by .ci/run; by hand: scripts/consumer-test.sh
# (NPM=… picks another npm, e.g. NPM="npx -y npm@10"; KEEP=1 keeps the folder).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
NPM="${NPM:-npm}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/nnmedia-consumer-XXXXXX")"
if [ -z "${KEEP:-}" ]; then trap 'rm -rf "$WORK"' EXIT; else echo "consumer test folder: $WORK"; fi
ORT_VERSION="$(node -p "require('$ROOT/package.json').devDependencies['onnxruntime-node']")"
FFMPEG_VERSION="$(node -p "require('$ROOT/package.json').devDependencies['@ffmpeg-installer/ffmpeg']")"
# onnxruntime-node's install script downloads GPU libraries from nuget.org: skipped, as docs/install.md says
export ONNXRUNTIME_NODE_INSTALL=skip
# the optional ffmpeg must come from the package, not from the machine
unset NNMEDIA_FFMPEG

fail() {
  echo "consumer test FAILED: $*" >&2
  exit 1
}
step() { echo "--- $*"; }
# runs a command that must fail; its stderr must match a pattern (grep -E)
expect_fail() {
  local pattern="$1"
  shift
  local err
  if err="$("$@" 2>&1 >/dev/null)"; then fail "expected failure: $*"; fi
  echo "$err" | grep -Eq -- "$pattern" || fail "$* printed: $err (expected /$pattern/)"
  echo "  fails as it should: $(echo "$err" | head -1 | cut -c1-160)"
}
# timed npm install; prints seconds and the size of node_modules
install() {
  local t0=$SECONDS
  $NPM install --no-audit --no-fund --loglevel=error "$@" > install.log 2>&1 || {
    cat install.log
    fail "npm install $*"
  }
  echo "  installed in $((SECONDS - t0)) s; node_modules $(du -sh node_modules | cut -f1)"
}

start=$SECONDS
step "npm pack ($($NPM --version))"
(cd "$ROOT" && $NPM pack --silent --pack-destination "$WORK" > "$WORK/pack.log" 2>&1) || {
  cat "$WORK/pack.log"
  fail "npm pack"
}
TGZ="$(ls "$WORK"/nnmedia-*.tgz)"
echo "  $(basename "$TGZ"): $(du -h "$TGZ" | cut -f1)"

# a PATH with node and the usual tools but no ffmpeg, for the no-ffmpeg check
mkdir "$WORK/bin"
ln -s "$(command -v node)" "$WORK/bin/node"

step "npm install nnmedia: no onnxruntime-node, no ffmpeg; onnxruntime-web (an optional dependency) runs the demo"
mkdir "$WORK/plain"
cd "$WORK/plain"
echo '{ "name": "plain", "version": "1.0.0", "private": true, "type": "module" }' > package.json
install "$TGZ"
[ ! -e node_modules/onnxruntime-node ] || fail "onnxruntime-node was installed without being asked for"
[ -e node_modules/onnxruntime-web ] || fail "onnxruntime-web (an optional dependency) was not installed"
[ ! -e node_modules/@ffmpeg-installer ] || fail "@ffmpeg-installer was installed without being asked for"
MODEL=node_modules/nnmedia/models/silero_vad_v4.onnx
npx nnmedia --help | grep -q '^Usage: nnmedia' || fail "npx nnmedia --help"
TMPDIR="$WORK" npx nnmedia demo > demo.log 2> demo.err || {
  cat demo.log demo.err
  fail "npx nnmedia demo (onnxruntime-web)"
}
grep -q 'loads and runs in onnxruntime-web' demo.log || fail "the demo did not run on onnxruntime-web: $(cat demo.log)"
grep -q 'note: running models with onnxruntime-web' demo.err || fail "no note that models run on onnxruntime-web: $(cat demo.err)"
grep 'vad: decision agreement' demo.log | sed 's/^/  /'
npx nnmedia compress "$MODEL" -o m.nnm 2> /dev/null | tee out.log
npx nnmedia decompress m.nnm -o back.onnx | tee -a out.log
[ "$(stat -c %s back.onnx)" = "$(stat -c %s "$MODEL")" ] || fail "restored model size differs from the original"
npx nnmedia inspect m.nnm > /dev/null || fail "inspect"
npx nnmedia eval m.nnm -m "$MODEL" --task vad --json > eval.json 2> /dev/null || fail "eval --task vad (onnxruntime-web)"
node -e "
  const r = JSON.parse(require('fs').readFileSync('eval.json', 'utf8'));
  const a = r.task.metrics.find((m) => m.key === 'agreement').value;
  if (!(a >= 0.98)) throw new Error('vad agreement ' + a);
  console.log('  eval --task vad on onnxruntime-web: decision agreement ' + a.toFixed(4));
"
# the built-in tasks' data ships (eval --task vad|ocr|isnet read it from the package)
for d in speech ocr images; do
  [ -d "node_modules/nnmedia/data/$d" ] || fail "the package lacks data/$d (a built-in task's data)"
done
# the source maps point into the package (src/ ships with dist/)
node -e "
  const dir = 'node_modules/nnmedia/dist/pipeline/';
  const map = JSON.parse(require('fs').readFileSync(dir + 'compress.js.map', 'utf8'));
  const src = require('path').resolve(dir, map.sourceRoot ?? '', map.sources[0]);
  if (!require('fs').existsSync(src)) throw new Error('source map points to a missing ' + src);
"
node -e "
  const n = await import('nnmedia');
  const b = await import('nnmedia/browser');
  for (const f of ['compressModel', 'decompressArchive', 'Archive']) if (typeof n[f] !== 'function') throw new Error('nnmedia lacks ' + f);
  for (const f of ['decodeArchive', 'rebuildOnnxModel']) if (typeof b[f] !== 'function') throw new Error('nnmedia/browser lacks ' + f);
  const t = await n.decodeAllTensors(new n.Archive('m.nnm'));
  if (t.size < 20) throw new Error('decoded only ' + t.size + ' tensors');
  console.log('  import(\"nnmedia\"), import(\"nnmedia/browser\"): ok; ' + t.size + ' tensors decoded');
" --input-type=module
expect_fail 'E_MISSING_CODEC.*@ffmpeg-installer/ffmpeg' env PATH="$WORK/bin" node node_modules/nnmedia/dist/cli/main.js \
  compress "$MODEL" -o v.nnm --media video
[ ! -e v.nnm ] || fail "a failed compress left v.nnm"
# without any onnxruntime (a project that removed the optional one): decode and fixed-settings compress still
# work, and what runs a model names the package to install
rm -rf node_modules/onnxruntime-web
npx nnmedia compress "$MODEL" -o plain.nnm > /dev/null || fail "compress without onnxruntime"
expect_fail 'E_MISSING_DEPENDENCY.*npm install onnxruntime-node' npx nnmedia eval m.nnm -m "$MODEL"
expect_fail 'E_MISSING_DEPENDENCY.*npm install onnxruntime-node' npx nnmedia demo

step "TypeScript consumers: the public types check without skipLibCheck (nodenext, node10, bundler + browser)"
TS_VERSION="$(node -p "require('$ROOT/package.json').devDependencies.typescript")"
TYPES_NODE="$(node -p "require('$ROOT/package.json').devDependencies['@types/node']")"
mkdir "$WORK/types"
cd "$WORK/types"
echo '{ "name": "types", "version": "1.0.0", "private": true, "type": "module" }' > package.json
install "$TGZ" "typescript@$TS_VERSION" "@types/node@$TYPES_NODE"
cat > node.ts <<'TS'
import { compressModel, decompressArchive, NnmediaError, OptionError } from 'nnmedia';
import type { CompressOptions, QualityRecord, CalibrationSpec, TaskEvaluator, Manifest } from 'nnmedia';
import { decodeArchive, rebuildOnnxModel, type Manifest as PageManifest } from 'nnmedia/browser';
const options: CompressOptions = { targetBpw: 4 };
export async function run(): Promise<QualityRecord | undefined> {
  try {
    const r = await compressModel('m.onnx', 'm.nnm', options);
    await decompressArchive('m.nnm', 'b.onnx', { jobs: 2 });
    const m: Manifest = r.manifest;
    return m.quality;
  } catch (e) {
    if (e instanceof OptionError) console.log(e.code);
    if (e instanceof NnmediaError) console.log(e.file, e.tensor);
    throw e;
  }
}
export async function page(url: string): Promise<PageManifest> {
  const d = await decodeArchive(url);
  rebuildOnnxModel(d);
  return d.manifest;
}
export type Inputs = CalibrationSpec | TaskEvaluator;
TS
# the root's `browser` condition gives the browser entry's types to a bundler that targets the browser
printf "import { decodeArchive } from 'nnmedia';\nexport const decode = decodeArchive;\n" > page.ts
TSC="node node_modules/typescript/bin/tsc --noEmit --strict --target es2022 --lib es2022,dom"
$TSC --module nodenext --moduleResolution nodenext --types node node.ts || fail "tsc (nodenext) on the public types"
$TSC --module esnext --moduleResolution node10 --types node node.ts || fail "tsc (node10) on the public types"
$TSC --module esnext --moduleResolution bundler --customConditions browser page.ts || fail "tsc (bundler, browser condition)"
echo "  tsc --strict without skipLibCheck: nodenext, node10, bundler + browser condition: ok"

step "full install: nnmedia + onnxruntime-node@$ORT_VERSION + @ffmpeg-installer/ffmpeg@$FFMPEG_VERSION"
mkdir "$WORK/full"
cd "$WORK/full"
echo '{ "name": "full", "version": "1.0.0", "private": true, "type": "module" }' > package.json
install "$TGZ" "onnxruntime-node@$ORT_VERSION" "@ffmpeg-installer/ffmpeg@$FFMPEG_VERSION"
MODEL=node_modules/nnmedia/models/silero_vad_v4.onnx
TMPDIR="$WORK" npx nnmedia demo > demo.log || {
  cat demo.log
  fail "npx nnmedia demo"
}
grep -q 'vad: decision agreement' demo.log || fail "demo printed no vad agreement: $(cat demo.log)"
grep 'vad: decision agreement\|kept in' demo.log | sed 's/^/  /'
npx nnmedia compress "$MODEL" -o m.nnm > /dev/null
npx nnmedia eval m.nnm -m "$MODEL" --task vad --json > eval.json
node -e "
  const r = JSON.parse(require('fs').readFileSync('eval.json', 'utf8'));
  const a = r.task.metrics.find((m) => m.key === 'agreement').value;
  if (!(a >= 0.98)) throw new Error('vad agreement ' + a);
  console.log('  eval --task vad: decision agreement ' + a.toFixed(4));
"
env PATH="$WORK/bin" node node_modules/nnmedia/dist/cli/main.js compress "$MODEL" -o v.nnm --media video --codec ffv1 | sed 's/^/  /'
env PATH="$WORK/bin" node node_modules/nnmedia/dist/cli/main.js decompress v.nnm -o v.onnx | sed 's/^/  /'
[ "$(stat -c %s v.onnx)" = "$(stat -c %s "$MODEL")" ] || fail "video round trip: size differs"

echo "consumer test passed in $((SECONDS - start)) s"
