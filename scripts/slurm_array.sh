#!/usr/bin/env bash
# SLURM job array with the Apptainer image: one participant per array task, one GPU each.
#
#   n=$(find /data/bids -mindepth 1 -maxdepth 1 -type d -name 'sub-*' | wc -l)
#   sbatch --array=1-"$n"%20 scripts/slurm_array.sh /data/bids /data/out infantseg.sif
#
# Task i segments the i-th sub-* folder (sorted by name), so a task that failed is rerun
# alone with --array=i; a rerun resumes from its work folder when WORK is kept. Then, once,
#   sbatch --dependency=afterany:<array job id> --wrap \
#     "apptainer run --cleanenv -B /data/bids:/bids:ro -B /data/out:/out infantseg.sif /bids /out group"
#
#SBATCH --job-name=infantseg
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=4
#SBATCH --mem=16G
#SBATCH --time=01:00:00
#SBATCH --output=%x-%A_%a.out
set -euo pipefail

if [ $# -ne 3 ] || [ -z "${SLURM_ARRAY_TASK_ID:-}" ]; then
  echo "usage: sbatch --array=1-N scripts/slurm_array.sh BIDS_DIR OUTPUT_DIR IMAGE.sif" >&2
  exit 2
fi
bids=$(realpath "$1")
out=$(realpath -m "$2")
sif=$(realpath "$3")
# Node-local scratch for Nipype's cache: many small files, kept off the shared filesystem.
work=${WORK:-${TMPDIR:-/tmp}/infantseg-${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}}
mkdir -p "$out" "$work"

mapfile -t subjects < <(find "$bids" -mindepth 1 -maxdepth 1 -type d -name 'sub-*' \
                          -printf '%f\n' | LC_ALL=C sort)
index=$((SLURM_ARRAY_TASK_ID - 1))
if [ "$index" -ge "${#subjects[@]}" ]; then
  echo "array task $SLURM_ARRAY_TASK_ID: only ${#subjects[@]} participants in $bids" >&2
  exit 2
fi
subject=${subjects[$index]}
echo "array task $SLURM_ARRAY_TASK_ID: $subject on $(hostname)"

apptainer run --nv --cleanenv \
  -B "$bids:/bids:ro" -B "$out:/out" -B "$work:/work" \
  "$sif" /bids /out participant \
  --participant-label "${subject#sub-}" -w /work \
  --nprocs 1 --omp-nthreads "${SLURM_CPUS_PER_TASK:-1}" --device auto
