#!/usr/bin/env bash
# Plants each bug of tools/plant_bug.py in a scratch clone of this repository's HEAD and runs
# the tests that must catch it; writes $OUT/results.md (default OUT=/tmp/bugs).
#   bash tools/planted_bugs.sh
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-/tmp/bugs}
mkdir -p "$OUT"
run() {
  bug=$1; shift
  dir=$OUT/$bug; rm -rf $dir; git clone -q "$REPO" $dir; ln -s "$REPO/.venv" $dir/.venv
  (cd $dir && git checkout -q -b "planted/$bug" && "$REPO/.venv/bin/python" tools/plant_bug.py $bug && git commit -qam "planted: $bug")
  (cd $dir && timeout 900 .venv/bin/pytest -n 2 --dist loadgroup -p no:cacheprovider -q --tb=no -rf "$@" > $OUT/$bug.log 2>&1)
  echo "## $bug: $(tail -1 $OUT/$bug.log)"; grep "^FAILED" $OUT/$bug.log | head -8
}
{
run recipe_wrong_placement tests/test_paper_recipes.py -m "not slow"
run traced_recipe_bad_setting tests/test_paper_recipes.py -k "cifar100_vgg19_bn"
run notebook_cell_raises tests/test_notebooks.py -k 06
run no_device_mean tests/test_multidevice.py
run running_variance_factor tests/test_functional.py tests/test_modules.py
run first_row_off_by_one tests/test_functional.py tests/test_family.py
run pmap_gradients_not_averaged tests/test_train.py -k "eight_devices and pmap"
run mask_fraction_per_device tests/test_mask.py
run processes_read_the_same_rows tests/test_preemption.py -k two_processes
run resume_one_batch_early tests/test_preemption.py tests/test_train.py -k "resume or sigterm"
run dropout_key_dropped tests/test_paper_recipes.py -k "runs_two_steps"
} > $OUT/results.md 2>&1
echo done >> $OUT/results.md
