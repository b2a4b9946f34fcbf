#!/usr/bin/env bash
# Build the Docker image and run it on the demo dataset the way a user would: as a non-root
# user with no passwd entry, read-only root filesystem and input mount, no network. Checks
# --version, the participant outputs (against .circleci/expected_outputs.txt), the one-line
# refusal or success of --pose-normalize, and the group level (against
# .circleci/expected_group_outputs.txt). Needs a Docker engine.
#
#   scripts/container_test.sh
#
# Environment (all optional):
#   IMAGE            tag to build and test (default bids_infantseg:test)
#   BASE_IMAGE       Debian base for the build (default: the Dockerfile's)
#   TORCH            cpu (default: a CUDA torch is GBs) or cuda
#   FETCH_TEMPLATES  1, 0 or auto (default: 1 when TemplateFlow's S3 answers, else 0)
#   LOCAL_WHEELS     a folder of wheels (e.g. an offline CPU torch) served to the build
#                    on 127.0.0.1:$LOCAL_WHEELS_PORT (default 8765)
#   SKIP_BUILD=1     test an image that is already built
#   SCRATCH          where the demo data and outputs go (default: a new temporary folder)
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-bids_infantseg:test}
TORCH=${TORCH:-cpu}
FETCH_TEMPLATES=${FETCH_TEMPLATES:-auto}
SCRATCH=${SCRATCH:-$(mktemp -d)}
EXPECTED=.circleci/expected_outputs.txt
EXPECTED_GROUP=.circleci/expected_group_outputs.txt
say() { printf '\n== %s\n' "$*"; }
fail() { echo "container_test: FAIL: $*" >&2; exit 1; }

docker info >/dev/null 2>&1 || fail "no Docker engine answers (docker info)"
version=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' bids_infantseg/__init__.py)

# ---------------------------------------------------------------- build
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  args=(--network host --build-arg "TORCH=$TORCH" --build-arg "VERSION=$version"
        --build-arg "VCS_REF=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
        --build-arg "BUILD_DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)")
  [ -n "${BASE_IMAGE:-}" ] && args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
  if [ "$FETCH_TEMPLATES" = auto ]; then
    if python3 -c 'import urllib.request as u; u.urlopen("https://templateflow.s3.amazonaws.com/tpl-MNIInfant/template_description.json", timeout=10)' 2>/dev/null
    then FETCH_TEMPLATES=1
    else FETCH_TEMPLATES=0; echo "container_test: TemplateFlow's S3 is unreachable from here:" \
      "building WITHOUT the MNIInfant templates (FETCH_TEMPLATES=0)" >&2
    fi
  fi
  args+=(--build-arg "FETCH_TEMPLATES=$FETCH_TEMPLATES")
  if [ -n "${LOCAL_WHEELS:-}" ]; then
    # Serve the folder over HTTP on the host network; the build sees it through --network host.
    # A fixed port: build arguments are part of Docker's cache key.
    port=${LOCAL_WHEELS_PORT:-8765}
    python3 -m http.server "$port" --bind 127.0.0.1 --directory "$LOCAL_WHEELS" >/dev/null 2>&1 &
    server=$!
    trap 'kill "$server" 2>/dev/null || true' EXIT
    sleep 1
    args+=(--build-arg "PIP_FIND_LINKS=http://127.0.0.1:$port/"
           --build-arg "TORCH_CPU_INDEX=https://pypi.org/simple")
  fi
  say "docker build ${args[*]} -t $IMAGE ."
  start=$SECONDS
  docker build "${args[@]}" -t "$IMAGE" . >"$SCRATCH/build.log" 2>&1 \
    || { tail -40 "$SCRATCH/build.log"; fail "docker build (log: $SCRATCH/build.log)"; }
  echo "build time: $((SECONDS - start)) s"
fi
size=$(docker image inspect --format '{{.Size}}' "$IMAGE")
echo "image size: $((size / 1000000)) MB ($IMAGE)"
label=$(docker image inspect --format '{{index .Config.Labels "org.opencontainers.image.version"}}' "$IMAGE")
[ "$label" = "$version" ] || fail "image label version '$label' != package version '$version'"

# --------------------------------------------------------------- run as a user would
# A uid with no passwd entry proves "any --user"; root's own id would prove nothing.
if [ "$(id -u)" = 0 ]; then user=54321:54321; else user="$(id -u):$(id -g)"; fi
mkdir -p "$SCRATCH/data" "$SCRATCH/out" "$SCRATCH/work" "$SCRATCH/pose"
[ "$(id -u)" = 0 ] && chown "$user" "$SCRATCH/data" "$SCRATCH/out" "$SCRATCH/work" "$SCRATCH/pose"
dock=(docker run --rm --read-only --network none --user "$user" --tmpfs /tmp)
show() { printf '$'; printf ' %q' "$@"; printf '\n'; "$@"; }

say "version"
got=$(show "${dock[@]}" "$IMAGE" --version)
echo "$got"
[ "$(echo "$got" | tail -1)" = "bids_infantseg $version" ] || fail "--version said: $got"

say "demo dataset (written by the image's own bids_infantseg_demo)"
show "${dock[@]}" -v "$SCRATCH/data:/data" --entrypoint bids_infantseg_demo "$IMAGE" /data/bids

model=()
if ! "${dock[@]}" --entrypoint python "$IMAGE" -c \
    'from bids_infantseg.model.card import resolve_model_path as r; r("default")' 2>/dev/null; then
  say "NOTE: the image has no bundled model yet; using a tiny UNTRAINED test model"
  show "${dock[@]}" -v "$SCRATCH/data:/data" -v "$PWD/tests:/src/tests:ro" -e PYTHONPATH=/src \
    --entrypoint python "$IMAGE" -c \
    'from pathlib import Path; from tests.model_factory import make_tiny_model as m; m(Path("/data/model"))'
  model=(--model /data/model)
fi
inputs=(-v "$SCRATCH/data:/data:ro")

say "participant level"
start=$SECONDS
show "${dock[@]}" "${inputs[@]}" -v "$SCRATCH/out:/out" -v "$SCRATCH/work:/work" "$IMAGE" \
  /data/bids /out participant -w /work --nprocs 1 "${model[@]}" \
  || fail "participant level exited $?"
echo "participant level: $((SECONDS - start)) s"
(cd "$SCRATCH/out" && find . -type f | sed 's|^\./||' | LC_ALL=C sort) >"$SCRATCH/outputs.txt"
diff -u "$EXPECTED" "$SCRATCH/outputs.txt" || fail "outputs differ from $EXPECTED"
echo "outputs match $EXPECTED ($(wc -l <"$EXPECTED") files)"
for tsv in "$SCRATCH"/out/sub-*/ses-*/anat/*_volumes.tsv; do
  [ "$(wc -l <"$tsv")" -gt 2 ] || fail "$tsv has no rows"
done

say "participant level with --pose-normalize (sub-02)"
rc=0
show "${dock[@]}" "${inputs[@]}" -v "$SCRATCH/pose:/out" "$IMAGE" /data/bids /out participant \
  --participant-label 02 --pose-normalize --nprocs 1 "${model[@]}" 2>"$SCRATCH/pose.err" || rc=$?
cat "$SCRATCH/pose.err" >&2
if [ "$rc" = 0 ]; then
  echo "--pose-normalize: segmented with the image's templates"
elif [ "$rc" = 2 ] && grep -q "is not downloaded" "$SCRATCH/pose.err" \
     && ! docker run --rm --entrypoint test "$IMAGE" -s \
          /opt/templateflow/tpl-MNIInfant/cohort-5/tpl-MNIInfant_cohort-5_res-1_T2w.nii.gz; then
  echo "--pose-normalize: refused in one line, as expected of an image built without templates"
  # Still prove the pose path in the container: a synthetic TemplateFlow home, read-only.
  mkdir -p "$SCRATCH/tf" "$SCRATCH/pose2"
  [ "$(id -u)" = 0 ] && chown "$user" "$SCRATCH/tf" "$SCRATCH/pose2"
  show "${dock[@]}" -v "$SCRATCH/tf:/tf" -v "$PWD/tests:/src/tests:ro" -e PYTHONPATH=/src \
    --entrypoint python "$IMAGE" -c \
    'from pathlib import Path; from tests.templateflow_home import build_templateflow_home as b; b(Path("/tf"), cohorts=(5,))'
  show "${dock[@]}" "${inputs[@]}" -v "$SCRATCH/tf:/tf:ro" -e TEMPLATEFLOW_HOME=/tf \
    -v "$SCRATCH/pose2:/out" "$IMAGE" /data/bids /out participant --participant-label 02 \
    --pose-normalize --nprocs 1 "${model[@]}" || fail "--pose-normalize with a synthetic home"
  echo "--pose-normalize: segmented with a synthetic read-only TemplateFlow home"
else
  fail "--pose-normalize exited $rc"
fi

say "group level"
show "${dock[@]}" "${inputs[@]}" -v "$SCRATCH/out:/out" "$IMAGE" /data/bids /out group \
  || fail "group level exited $?"
(cd "$SCRATCH/out" && find group -type f | LC_ALL=C sort) >"$SCRATCH/group.txt"
diff -u "$EXPECTED_GROUP" "$SCRATCH/group.txt" || fail "group outputs differ from $EXPECTED_GROUP"
(cd "$SCRATCH/out" && find . -type f -not -path './group/*' | sed 's|^\./||' | LC_ALL=C sort) \
  | diff -u "$EXPECTED" - || fail "the group level changed participant outputs"
echo "group outputs match $EXPECTED_GROUP ($(wc -l <"$EXPECTED_GROUP") files)"

# The validator (a test extra) judges everything both levels wrote, when installed.
if command -v bids-validator-deno >/dev/null; then
  bids-validator-deno "$SCRATCH/out" >"$SCRATCH/validator.log" 2>&1 \
    || { cat "$SCRATCH/validator.log"; fail "bids-validator-deno on the outputs"; }
  echo "bids-validator-deno: outputs (participant and group) valid"
fi

say "container test passed ($SCRATCH)"
