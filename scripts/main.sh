#!/usr/bin/env bash
# The main job, on a fresh machine: set up .venv, extract the real-weight backbones over CelebA, train and
# compare the heads, print the leaderboard, write report.md (with plots) and a self-contained report.html.
#   CELEBA_ROOT  CelebA folder (default data/celeba; any layout `python -m extract` reads)
#   OUT          output folder (default runs/celeba, or runs/demo on the demo data)
#   BACKBONES    backbones to extract (default: the seven whose weights ship in pip packages)
#   UTKFACE_ROOT UTKFace folder (default ../shared/data/utkface); when present (and not on demo data) it is
#                extracted into its own store and every head is also evaluated on it (CelebA -> UTKFace)
# Rerunning resumes: finished extraction units are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
py=.venv/bin/python
root=${CELEBA_ROOT:-data/celeba}
backbones=${BACKBONES:-efficientnet_lite0 sface sface_map dlib_resnet dlib_age dlib_gender facenet_casia}
demo=""
if [ ! -e "$root" ]; then
  cat >&2 <<MSG
################################################################################################
  No CelebA at '$root'. Get it (non-commercial research use) from
  https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html: img_align_celeba.zip, list_attr_celeba.txt,
  list_eval_partition.txt; unzip into one folder and rerun with CELEBA_ROOT=that/folder.

  Running on a small GENERATED DEMO dataset in the CelebA layout instead (drawn cartoon faces):
  THE NUMBERS BELOW MEAN NOTHING. Face networks find no faces in drawings, so only
  efficientnet_lite0 runs.
################################################################################################
MSG
  demo="--demo"
  out=${OUT:-runs/demo}
  backbones=efficientnet_lite0
  root=$("$py" scripts/make_demo_celeba.py "$out")
else
  out=${OUT:-runs/celeba}
fi
mkdir -p "$out"
store="$out/features.zarr"
# shellcheck disable=SC2086  # BACKBONES is a space-separated list
"$py" -m extract --dataset celeba --root "$root" --backbones $backbones --store "$store"
eval_args=""
utk_root=${UTKFACE_ROOT:-../shared/data/utkface}
if [ -z "$demo" ] && [ -e "$utk_root" ]; then
  # shellcheck disable=SC2086
  "$py" -m extract --dataset utkface --root "$utk_root" --backbones $backbones --store "$out/utkface.zarr"
  eval_args="--eval-store $out/utkface.zarr"
fi
all=$(echo $backbones | tr ' ' '+')
specs="$backbones"
[ "$all" != "$backbones" ] && specs="$backbones $all"  # also every backbone concatenated
# FaceNet beside dlib's face net (issue 20), when both were extracted
case " $backbones " in *" facenet_casia "*) case " $backbones " in *" dlib_resnet "*)
  specs="$specs facenet_casia+dlib_resnet";; esac;; esac
# CelebA ties age to gender (its women are far more often young than its men): when the store records
# `Young`, the training rows are reweighed so that "older -> male" earns a head nothing (classify/balance.py)
balance=""
"$py" scripts/has_attribute.py "$store" Young && balance="--balance-by Young"
# shellcheck disable=SC2086
"$py" -m classify train --store "$store" $eval_args --backbones $specs --out "$out/heads" $balance $demo
"$py" -m classify report --store "$store" --results "$out/heads" --out "$out/report.html" $demo  # and report.md
echo "report: $out/report.md, $out/report.html" >&2
