# The README's two commands: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# The install stamp is keyed on the dependency spec: editing pyproject.toml reinstalls, nothing else does.
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-16)
# Keep test runs inside the 2-core budget and deterministic.
TEST_ENV := CDDFM3D_FAST=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TQDM_DISABLE=1 PYTHONHASHSEED=0 CUDA_VISIBLE_DEVICES= PLOTLY_RENDERER=plotly_mimetype+notebook
PYTEST_ARGS ?=

.PHONY: demo test lint unit notebooks bench clean-notebooks sync-notebooks install mini-assets editing-assets \
        domain-assets

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(VENV)/bin/python pyproject.toml
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[dev,photo]"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m cddfm3d demo --out out

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) tools/clean_notebooks.py --check notebooks
	$(PY) tools/sync_notebooks.py --check notebooks
	$(TEST_ENV) $(PY) -m pytest -n 2 --dist loadfile $(PYTEST_ARGS) tests
	$(TEST_ENV) $(PY) -m pytest -n 2 --dist loadfile --nbval-lax --nbval-current-env --nbval-cell-timeout=900 $(PYTEST_ARGS) notebooks

lint: $(STAMP)
	$(PY) -m ruff check .

unit: $(STAMP)
	$(TEST_ENV) $(PY) -m pytest -n 2 --dist loadfile $(PYTEST_ARGS) tests

notebooks: $(STAMP)
	$(TEST_ENV) $(PY) -m pytest -n 2 --dist loadfile --nbval-lax --nbval-current-env --nbval-cell-timeout=900 notebooks

bench: $(STAMP)
	$(PY) benchmarks/bench_generator.py

clean-notebooks: $(STAMP)
	$(PY) tools/clean_notebooks.py notebooks

# Each notebooks/NAME.ipynb is paired with notebooks/NAME.py (jupytext py:percent); the newer file of a pair wins.
sync-notebooks: $(STAMP)
	$(PY) tools/sync_notebooks.py notebooks

# Rebuild the shipped mini-world weights (assets/) : render the datasets, fine-tune the generator and the
# reconstruction network (resumable: re-run after an interruption), evaluate and register them in
# assets/MANIFEST.json. These are exactly the commands the manifest records for the shipped files
# (tests/test_makefile.py checks it). Both networks are fine-tuned on the renders of today's world (v2: the light
# prior of issue 9) from the ones shipped at commits $(GAN_INIT_COMMIT) and $(RECON_INIT_COMMIT) (trained on the
# previous world; their own recipes are in those commits' manifests and in the comment lines of today's): `git show`
# recreates the start files. The generator's fine-tune ran to step 5542 and was restored to its step-$(GAN_STOP)
# snapshot, the best by Frechet distance to 2000 training renders (benchmarks/README.md); resuming is exact, so
# --stop-at-step $(GAN_STOP) reproduces it. The reconstruction network ran a 16000-step schedule, then was resumed with
# a 20000-step one. Hours on 2 CPU cores; DEVICE=cuda takes minutes on one GPU.
WORLD_DIR ?= out/world
DEVICE ?= cpu
GAN_INIT_COMMIT := ac5b37b68413
GAN_INIT := out/prev/mini-generator-7d4114e4.safetensors
GAN_STOP ?= 5000
RECON_INIT_COMMIT := 310859b6f599
RECON_INIT := out/prev/mini-recon-e73d8ab6.safetensors
mini-assets: $(STAMP)
	$(PY) -m cddfm3d make-world --out $(WORLD_DIR)/train --n 50000 --seed 0 --domains human
	mkdir -p $(dir $(GAN_INIT))
	git show $(GAN_INIT_COMMIT):assets/mini/generator.safetensors > $(GAN_INIT)
	$(PY) -m cddfm3d train-gan --data $(WORLD_DIR)/train --out out/gan_v2 --resolution 64 --batch 16 --kimg 400 --snapshot-kimg 4 --gamma 0.1 --seed 0 --device $(DEVICE) --init-generator $(GAN_INIT) --d-warmup-steps 200 --stop-at-step $(GAN_STOP)
	git show $(RECON_INIT_COMMIT):assets/mini/recon.safetensors > $(RECON_INIT)
	$(PY) -m cddfm3d train-recon --data $(WORLD_DIR)/train --out out/recon_v2 --steps 16000 --width 32 --lr 0.001 --photo-batch 0 --attribute-weights shape=1 expression=1 albedo=1 light=1 pose=1 --init $(RECON_INIT) --device $(DEVICE)
	$(PY) -m cddfm3d train-recon --data $(WORLD_DIR)/train --out out/recon_v2 --steps 20000 --width 32 --lr 0.001 --photo-batch 0 --attribute-weights shape=1 expression=1 albedo=1 light=1 pose=1 --init $(RECON_INIT) --device $(DEVICE)
	$(PY) -m cddfm3d make-world --out $(WORLD_DIR)/heldout --n 10000 --seed 1 --domains human toon
	$(PY) -m cddfm3d make-world --out $(WORLD_DIR)/floor --n 10000 --seed 2 --domains human
	$(PY) -m cddfm3d ship-mini --gan out/gan_v2 --recon out/recon_v2 --train-data $(WORLD_DIR)/train --heldout $(WORLD_DIR)/heldout --floor $(WORLD_DIR)/floor

# The editing stage's shipped files (assets/mini/attribute_predictor.safetensors, layer_sets.json,
# recon_independent.safetensors, manipulator_<attribute>.safetensors), from the shipped generator and recon:
# exactly the commands their manifest entries record (tests/test_makefile.py). About 2 h on 2 CPU cores (gen-pairs
# runs one torchrun rank per core, 150k pairs in 21-52 min; T 8000 steps with the default loss, per-attribute feature
# distances plus 0.1 PDC, 10-14 min on one thread; each F^i 5-7 min through T, then 5 min through the images (400
# steps of --through image from the T-trained network, the editor's input delta from the pairs' labels: less
# leakage, benchmarks/README.md); the independent evaluator's train-recon takes the longest).
editing-assets: $(STAMP)
	$(VENV)/bin/torchrun --nnodes 1 --nproc_per_node 2 -m cddfm3d gen-pairs --out out/pairs150 --count 150000 --seed 0 --threads 1 --device $(DEVICE)
	$(PY) -m cddfm3d train-t --pairs out/pairs150 --out out/t150wd --steps 8000 --weight-decay 0.05 --device $(DEVICE)
	$(VENV)/bin/torchrun --nnodes 1 --nproc_per_node 2 -m cddfm3d gen-pairs --out out/pairs2_heldout --count 2000 --seed 1 --threads 1 --device $(DEVICE)
	$(PY) -m cddfm3d select-layers --out out/layer_sets3.json --method both --predictor out/t150wd/attribute_predictor.safetensors --device $(DEVICE)
	$(PY) -m cddfm3d ship-editing --pairs out/pairs150 --t out/t150wd --heldout-pairs out/pairs2_heldout --layer-sets out/layer_sets3.json
	$(PY) -m cddfm3d train-recon --data $(WORLD_DIR)/train --out out/recon_ind_v2 --steps 6000 --width 24 --norm group --seed 1 --photo-batch 0 --attribute-weights shape=1 expression=1 albedo=1 light=1 pose=1 --device $(DEVICE)
	$(PY) -m cddfm3d ship-evaluator --recon out/recon_ind_v2 --train-data $(WORLD_DIR)/train --heldout $(WORLD_DIR)/heldout
	$(PY) -m cddfm3d train-f --attribute shape --pairs out/pairs150 --out out/f3/shape --batch 32 --device $(DEVICE)
	$(PY) -m cddfm3d train-f --attribute expression --pairs out/pairs150 --out out/f3/expression --batch 32 --device $(DEVICE)
	$(PY) -m cddfm3d train-f --attribute albedo --pairs out/pairs150 --out out/f3/albedo --batch 32 --device $(DEVICE)
	$(PY) -m cddfm3d train-f --attribute pose --pairs out/pairs150 --out out/f3/pose --batch 32 --device $(DEVICE)
	$(PY) -m cddfm3d train-f --attribute light --pairs out/pairs150 --out out/f3/light --batch 32 --device $(DEVICE)
	$(PY) -m cddfm3d train-f --attribute shape --pairs out/pairs150 --out out/f4/shape --batch 32 --steps 400 --lr 0.001 --warmup 20 --through image --edit-weight 3 --delta-from labels --init out/f3/shape/manipulator.safetensors --device $(DEVICE)
	$(PY) -m cddfm3d train-f --attribute expression --pairs out/pairs150 --out out/f4/expression --batch 32 --steps 400 --lr 0.001 --warmup 20 --through image --edit-weight 3 --delta-from labels --init out/f3/expression/manipulator.safetensors --device $(DEVICE)
	$(PY) -m cddfm3d train-f --attribute albedo --pairs out/pairs150 --out out/f4/albedo --batch 32 --steps 400 --lr 0.001 --warmup 20 --through image --edit-weight 3 --delta-from labels --init out/f3/albedo/manipulator.safetensors --device $(DEVICE)
	$(PY) -m cddfm3d train-f --attribute pose --pairs out/pairs150 --out out/f4/pose --batch 32 --steps 400 --lr 0.001 --warmup 20 --through image --edit-weight 3 --delta-from labels --init out/f3/pose/manipulator.safetensors --device $(DEVICE)
	$(PY) -m cddfm3d train-f --attribute light --pairs out/pairs150 --out out/f4/light --batch 32 --steps 400 --lr 0.001 --warmup 20 --through image --edit-weight 3 --delta-from labels --init out/f3/light/manipulator.safetensors --device $(DEVICE)
	$(PY) -m cddfm3d ship-f --runs out/f4/shape out/f4/expression out/f4/albedo out/f4/pose out/f4/light --pairs out/pairs150 --heldout-pairs out/pairs2_heldout

# Cross-domain editing's shipped files (issue 12): per style (toon, sketch) a reconstruction network used only to
# evaluate (assets/mini/recon_<style>.safetensors, float16) and the human generator fine-tuned to that style: toon
# with its mapping and affines frozen (assets/mini/generator_toon.safetensors, float16 changes of mini/generator),
# sketch with FreezeG on top (the lowest 4 blocks frozen too, their tRGB layers trained; int8 changes, 32 KB): the
# paper's mode collapsed on sketches, and only a small change fits the assets budget (benchmarks/README.md).
# Exactly the commands their manifest entries record (tests/test_makefile.py). About 2.5 h on 2 CPU cores; minutes
# on a GPU.
domain-assets: $(STAMP)
	$(PY) -m cddfm3d make-world --out out/adapt/world_toon --n 20000 --seed 0 --domains toon
	$(PY) -m cddfm3d train-recon --data out/adapt/world_toon --domain toon --out out/adapt/recon_toon --steps 4000 --width 16 --norm batch --photo-batch 0 --attribute-weights shape=1 expression=1 albedo=1 light=1 pose=1 --device $(DEVICE)
	$(PY) -m cddfm3d ship-evaluator --domain toon --recon out/adapt/recon_toon --train-data out/adapt/world_toon --heldout $(WORLD_DIR)/heldout --n 2000
	$(PY) -m cddfm3d finetune --data out/adapt/world_toon --domain toon --out out/adapt/ft_toon --kimg 24 --seed 0 --device $(DEVICE)
	$(PY) -m cddfm3d ship-domain --domain toon --run out/adapt/ft_toon --train-data out/adapt/world_toon --heldout $(WORLD_DIR)/heldout
	$(PY) -m cddfm3d make-world --out out/adapt/world_sketch --n 20000 --seed 0 --domains sketch
	$(PY) -m cddfm3d train-recon --data out/adapt/world_sketch --domain sketch --out out/adapt/recon_sketch --steps 4000 --width 16 --norm batch --photo-batch 0 --attribute-weights shape=1 expression=1 albedo=1 light=1 pose=1 --device $(DEVICE)
	$(PY) -m cddfm3d finetune --data out/adapt/world_sketch --domain sketch --out out/adapt/ft_sketch_fg4 --freeze freeze-g --freeze-g-blocks 4 --train-rgb --d-warmup-steps 0 --augment none --gamma 1 --kimg 16 --seed 0 --device $(DEVICE)
	$(PY) -m cddfm3d make-world --out out/adapt/heldout_sketch --n 2000 --seed 1 --domains sketch
	$(PY) -m cddfm3d ship-evaluator --domain sketch --recon out/adapt/recon_sketch --train-data out/adapt/world_sketch --heldout out/adapt/heldout_sketch --n 2000
	$(PY) -m cddfm3d ship-domain --domain sketch --run out/adapt/ft_sketch_fg4 --train-data out/adapt/world_sketch --heldout out/adapt/heldout_sketch --precision int8
