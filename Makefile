# Set-up, demo and tests in the project's own virtual environment.
#   make demo           record a generated drive with sensor faults, run the perception node with the
#                       shipped student on it over DDS, evaluate and print the report
#   make demo-training  generate scenes, train a teacher on a short budget, evaluate all 15 combinations
#   make test           run the test suite
# Overridable: PYTHON (interpreter for the venv), TORCH_SPEC (e.g. "torch==2.13.0" or a CUDA build),
# EXTRAS (drop "ros" on a machine whose ROS 2 install already provides rclpy and the messages).

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= ros,test
DEMO_DIR ?= runs/demo

PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv demo demo-training test clean

venv: $(STAMP)

$(STAMP): setup.py setup.cfg Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m robustseg_ros.demo --out $(DEMO_DIR)

demo-training: $(STAMP)
	$(PY) -m robustseg_core.demo --out $(DEMO_DIR)/training

test: $(STAMP)
	$(PY) -m pytest -q --durations=15 test

clean:
	rm -rf $(VENV) build *.egg-info runs

# ---- Reproducing docs/results.md (2-core CPU figures; see that file for times and machines) ----
BENCH_DATA ?= data/sim128
TEACHER_RUN ?= runs/teacher_cpu

$(BENCH_DATA)/meta.json: | $(STAMP)
	$(VENV)/bin/generate_dataset --out $(BENCH_DATA) --size 128 --seed 0 --train-scenes 80 --val-scenes 20 \
		--test-scenes 20 --frames-per-scene 8 --workers 2 --quiet

benchmark-data: $(BENCH_DATA)/meta.json

# Encoder pretraining, the stand-in for ImageNet MiT weights: scenes of another seed, drawn more widely.
PRETRAIN_DATA ?= data/pretrain128
PRETRAIN_RUN ?= runs/pretrain_cpu
SHIPPED_ENCODER := robustseg_core/models/weights/mit_cpu_sim.pth

$(PRETRAIN_DATA)/meta.json: | $(STAMP)
	$(VENV)/bin/generate_dataset --out $(PRETRAIN_DATA) --size 128 --seed 1000 --randomization wide \
		--train-scenes 500 --val-scenes 24 --test-scenes 0 --frames-per-scene 6 --workers 2 --quiet

pretrain-data: $(PRETRAIN_DATA)/meta.json

# Which pretraining inputs: one modality per sample ("single") or RGB only ("rgb"), same budget
# (config/pretrain_cpu.yaml); then a short teacher from each and from scratch, scored on val
# (docs/results.md, "Pretrained encoder").
CHOICE_EPOCHS ?= 8
encoder-choice: $(PRETRAIN_DATA)/meta.json $(BENCH_DATA)/meta.json
	for inputs in single rgb; do \
		$(VENV)/bin/pretrain_encoder --config config/pretrain_cpu.yaml --set data.root=$(PRETRAIN_DATA) \
			pretrain.inputs=$$inputs train.output_dir=runs/pretrain_$$inputs --resume auto || exit 1; done
	for init in single rgb scratch; do \
		weights=runs/pretrain_$$init/encoder.pth; [ $$init = scratch ] && weights=null; \
		$(VENV)/bin/train_teacher --config config/teacher_cpu.yaml --set data.root=$(BENCH_DATA) \
			model.pretrained=$$weights train.epochs=$(CHOICE_EPOCHS) train.output_dir=runs/encoder_choice/$$init \
			--resume auto || exit 1; \
		$(VENV)/bin/evaluate --checkpoint runs/encoder_choice/$$init/best.pt --data-root $(BENCH_DATA) --split val \
			--conventions drop --json runs/encoder_choice/$$init/eval_val.json || exit 1; done

pretrained-encoder: $(PRETRAIN_DATA)/meta.json
	$(VENV)/bin/pretrain_encoder --config config/pretrain_cpu.yaml --set data.root=$(PRETRAIN_DATA) \
		train.output_dir=$(PRETRAIN_RUN) --resume auto
	install -m 644 $(PRETRAIN_RUN)/encoder.pth $(SHIPPED_ENCODER)

teacher-results: $(BENCH_DATA)/meta.json
	$(VENV)/bin/train_teacher --config config/teacher_cpu.yaml --set data.root=$(BENCH_DATA) \
		train.output_dir=$(TEACHER_RUN) --resume auto
	$(VENV)/bin/evaluate --checkpoint $(TEACHER_RUN)/best.pt --data-root $(BENCH_DATA) --split test --robustness \
		--json $(TEACHER_RUN)/eval_test.json --markdown $(TEACHER_RUN)/eval_test.md

STUDENT_RUN ?= runs/student_cpu
SHIPPED_STUDENT := robustseg_ros/models/robustseg_student.pt

student-results: $(BENCH_DATA)/meta.json
	$(VENV)/bin/train_student --config config/student_cpu.yaml --set data.root=$(BENCH_DATA) \
		teacher.checkpoint=$(TEACHER_RUN)/best.pt train.output_dir=$(STUDENT_RUN) --resume auto
	$(VENV)/bin/evaluate --checkpoint $(STUDENT_RUN)/best.pt --data-root $(BENCH_DATA) --split test --robustness \
		--json $(STUDENT_RUN)/eval_test.json --markdown $(STUDENT_RUN)/eval_test.md

# The student of student-results with its head BatchNorm statistics recalibrated (recalibrate_bn, as the shipped
# one), shipped when it beats the shipped one.
shipped-student: student-results
	$(MAKE) $(STUDENT_RUN)_bn/eval_test.json
	$(MAKE) ship-student STUDENT_RUN=$(STUDENT_RUN)_bn

$(STUDENT_RUN)_bn/eval_test.json: $(STUDENT_RUN)/best.pt
	$(call recalibrate_and_evaluate,$(STUDENT_RUN)/best.pt)

# Ship the evaluated student of STUDENT_RUN when it beats the shipped one on test (RDEL and the mean of 15), e.g.
# `make ship-student STUDENT_RUN=runs/long/SPCR_seed0` after `make long-schedules`.
ship-student:
	$(VENV)/bin/export_checkpoint --checkpoint $(STUDENT_RUN)/best.pt --scores $(STUDENT_RUN)/eval_test.json \
		--out $(SHIPPED_STUDENT) --only-if-better --note "make ship-student STUDENT_RUN=$(STUDENT_RUN) on the generated benchmark (data/sim128)"

.PHONY: benchmark-data pretrain-data encoder-choice pretrained-encoder teacher-results student-results shipped-student \
	ship-student

# Teacher / S / SR / SPC / SPCR, three seeds each, on the generated benchmark (docs/results.md), as the
# paper runs it: the teacher and every student start from the pretrained encoder (student_cpu.yaml).
# Budgets from the learning curves and what fits a 2-core CPU (docs/results.md, "Stage 2, faithful protocol").
ABLATION_TEACHER_EPOCHS ?= 8
ABLATION_STUDENT_EPOCHS ?= 5
ABLATION_SEEDS ?= 0 1 2
ablation: $(BENCH_DATA)/meta.json
	$(PY) -m robustseg_core.training.ablation --out runs/ablation_faithful --data-root $(BENCH_DATA) \
		--seeds $(ABLATION_SEEDS) --jobs 2 --teacher-set train.epochs=$(ABLATION_TEACHER_EPOCHS) \
		--student-set train.epochs=$(ABLATION_STUDENT_EPOCHS)

# Budget: is 5 epochs what holds the faithful students back? S and SPCR for 2.4x the ablation's budget,
# distilled from the faithful ablation's seed-0 teacher (docs/results.md, "Student budget").
BUDGET_STUDENT_EPOCHS ?= 12
ablation-budget: $(BENCH_DATA)/meta.json
	$(PY) -m robustseg_core.training.ablation --teachers runs/ablation_faithful --out runs/budget_faithful \
		--data-root $(BENCH_DATA) --seeds 0 --methods S SPCR --jobs 2 \
		--student-set train.epochs=$(BUDGET_STUDENT_EPOCHS)

# $(call copy_run,FROM,TO): the checkpoints and config of run folder FROM that TO lacks, each copied through a
# .part file, so a killed copy never leaves a truncated checkpoint to resume from.
copy_run = mkdir -p $(2) && for f in best.pt last.pt config.yaml; do test -e $(2)/$$f || \
	{ cp $(1)/$$f $(2)/$$f.part && mv $(2)/$$f.part $(2)/$$f; }; done

# How far the faithful seed-0 teacher gets with 8 more epochs (a warm restart of its poly schedule),
# trained in a copy so the ablation's students keep their teacher (docs/results.md, "Student budget").
teacher-continued: $(BENCH_DATA)/meta.json
	$(call copy_run,runs/ablation_faithful/teacher_seed0,runs/teacher_continued)
	$(PY) -m robustseg_core.training.train_teacher --config runs/teacher_continued/config.yaml --resume auto \
		--allow-config-change --set train.output_dir=runs/teacher_continued train.epochs=16
	$(PY) -m robustseg_core.evaluation.evaluate --checkpoint runs/teacher_continued/best.pt --data-root $(BENCH_DATA) \
		--split test --conventions drop --json runs/teacher_continued/eval_test.json

# The same 12-epoch S and SPCR, distilled from that continued teacher (16 epochs): does a stronger
# teacher carry over to the faithful students? (docs/results.md, "A stronger teacher for the same students").
students-continued: $(BENCH_DATA)/meta.json runs/teacher_continued/best.pt
	mkdir -p runs/teachers_continued
	ln -sfn ../teacher_continued runs/teachers_continued/teacher_seed0
	$(PY) -m robustseg_core.training.ablation --teachers runs/teachers_continued --out runs/budget_continued \
		--data-root $(BENCH_DATA) --seeds 0 --methods S SPCR --jobs 2 \
		--student-set train.epochs=$(BUDGET_STUDENT_EPOCHS)

runs/teacher_continued/best.pt:
	$(MAKE) teacher-continued

# Those two students continued to $(EXTENDED_STUDENT_EPOCHS) epochs (a warm restart of their poly schedule, as for
# the continued teacher), in copies so the shorter runs keep their results: are they still budget-bound?
# (docs/results.md, "Longer students"). Continue again from the 24-epoch copies with
# `make students-extended EXTEND_FROM=runs/budget_extended EXTEND_TO=runs/budget_extended36 EXTENDED_STUDENT_EPOCHS=36`.
EXTENDED_STUDENT_EPOCHS ?= 24
EXTEND_FROM ?= runs/budget_continued
EXTEND_TO ?= runs/budget_extended
students-extended: $(BENCH_DATA)/meta.json $(EXTEND_FROM)/ablation.json
	$(call copy_run,$(EXTEND_FROM)/S_seed0,$(EXTEND_TO)/S_seed0)
	$(call copy_run,$(EXTEND_FROM)/SPCR_seed0,$(EXTEND_TO)/SPCR_seed0)
	$(PY) -m robustseg_core.training.ablation --teachers runs/teachers_continued --out $(EXTEND_TO) \
		--data-root $(BENCH_DATA) --seeds 0 --methods S SPCR --jobs 2 --allow-config-change \
		--student-set train.epochs=$(EXTENDED_STUDENT_EPOCHS)

runs/budget_extended/ablation.json:
	$(MAKE) students-extended EXTEND_FROM=runs/budget_continued EXTEND_TO=runs/budget_extended EXTENDED_STUDENT_EPOCHS=24

runs/budget_continued/ablation.json:
	$(MAKE) students-continued

# Fresh long schedules, no warm restarts: a 40-epoch teacher from the pretrained encoder, then S and SPCR for
# 40 epochs from it (seed 0): how close does the faithful protocol get with a budget near the earlier
# protocol's 40-epoch teacher? (docs/results.md, "Long schedules").
LONG_TEACHER_EPOCHS ?= 40
LONG_STUDENT_EPOCHS ?= 40
long-schedules: $(BENCH_DATA)/meta.json
	$(PY) -m robustseg_core.training.ablation --out runs/long --data-root $(BENCH_DATA) --seeds 0 \
		--methods teacher S SPCR --jobs 2 --teacher-set train.epochs=$(LONG_TEACHER_EPOCHS) \
		--student-set train.epochs=$(LONG_STUDENT_EPOCHS)

# $(call continue_spcr,FROM,TO,TEACHERS,EPOCHS,SEEDS): the SPCR of each seed in SEEDS in ablation folder FROM
# continued to EPOCHS epochs (a warm restart of its poly schedule) in a copy under TO, distilled from the same
# seed's teacher in TEACHERS. Runs already finished under TO are skipped; a killed one resumes.
continue_spcr = $(foreach seed,$(5),$(call copy_run,$(1)/SPCR_seed$(seed),$(2)/SPCR_seed$(seed)) && ) \
	$(PY) -m robustseg_core.training.ablation --teachers $(3) --out $(2) --data-root $(BENCH_DATA) --seeds $(5) \
		--methods SPCR --jobs 1 --allow-config-change --student-set train.epochs=$(4)

# $(call spcr_results,FOLDER,SEEDS): the test results of the SPCR of each seed in SEEDS in FOLDER, the marker
# that a stage of a long chain is done for those seeds.
spcr_results = $(foreach seed,$(2),$(1)/SPCR_seed$(seed)/eval_test.json)

# The 40-epoch SPCR of long-schedules continued to 50 epochs, in a copy.
long-extended: $(BENCH_DATA)/meta.json $(call spcr_results,runs/long,0)
	$(call continue_spcr,runs/long,runs/long50,runs/long,50,0)

runs/long/SPCR_seed%/eval_test.json:
	$(MAKE) long-schedules

# One fresh SPCR twice as long (80 epochs, one poly schedule, no warm restart) from a 40-epoch teacher,
# one run at a time with both cores (docs/results.md, "Eighty epochs").
# LONG_SEEDS="0 1 2" adds more seeds' teachers and SPCRs next to seed 0's (finished runs are skipped); the
# continuations below take the same LONG_SEEDS and build the stages they need for each seed.
LONGER_STUDENT_EPOCHS ?= 80
LONG_SEEDS ?= 0
long-spcr: $(BENCH_DATA)/meta.json
	$(PY) -m robustseg_core.training.ablation --out runs/long80 --data-root $(BENCH_DATA) --seeds $(LONG_SEEDS) \
		--methods teacher SPCR --jobs 1 --teacher-set train.epochs=$(LONG_TEACHER_EPOCHS) \
		--student-set train.epochs=$(LONGER_STUDENT_EPOCHS)

# The 80-epoch SPCR of long-spcr continued to 120 epochs, in a copy.
long-spcr-extended: $(BENCH_DATA)/meta.json $(call spcr_results,runs/long80,$(LONG_SEEDS))
	$(call continue_spcr,runs/long80,runs/long120,runs/long80,120,$(LONG_SEEDS))

runs/long80/SPCR_seed%/eval_test.json:
	$(MAKE) long-spcr

runs/long120/SPCR_seed%/eval_test.json:
	$(MAKE) long-spcr-extended

# $(call recalibrate_and_evaluate,CHECKPOINT): the head BatchNorm statistics of CHECKPOINT recomputed over complete
# inputs on the training frames (recalibrate_bn) into the folder of the target, then the test evaluation (the
# target) with the validated fusion policy reported beside the model (docs/results.md, "Recalibrated BatchNorm").
define recalibrate_and_evaluate
	mkdir -p $(@D)
	$(VENV)/bin/recalibrate_bn --checkpoint $(1) --data-root $(BENCH_DATA) --out $(@D)/best.pt
	$(VENV)/bin/evaluate --checkpoint $(@D)/best.pt --data-root $(BENCH_DATA) --split test --conventions drop \
		--robustness --fusion-policy validated --json $@ --markdown $(@D)/eval_test.md
endef

# The teacher of each seed's chain, recalibrated and evaluated as above (a student's -bn stage lists it beside the student).
runs/long80_bn/teacher_seed%/eval_test.json: runs/long80/SPCR_seed%/eval_test.json
	$(call recalibrate_and_evaluate,runs/long80/teacher_seed$*/best.pt)

# $(call spcr_stage,EPOCHS,PREVIOUS): long-spcr-EPOCHS continues the PREVIOUS-epoch SPCR of each of LONG_SEEDS to
# EPOCHS epochs (a warm restart of its poly schedule) in a copy under runs/longEPOCHS; long-spcr-EPOCHS-bn
# recalibrates those students and their teachers and evaluates them (recalibrate_and_evaluate).
define spcr_stage
long-spcr-$(1): $$(BENCH_DATA)/meta.json $$(call spcr_results,runs/long$(2),$$(LONG_SEEDS))
	$$(call continue_spcr,runs/long$(2),runs/long$(1),runs/long80,$(1),$$(LONG_SEEDS))

runs/long$(1)/SPCR_seed%/eval_test.json:
	$$(MAKE) long-spcr-$(1)

long-spcr-$(1)-bn: $$(foreach seed,$$(LONG_SEEDS),runs/long$(1)_bn/SPCR_seed$$(seed)/eval_test.json \
	runs/long80_bn/teacher_seed$$(seed)/eval_test.json)

runs/long$(1)_bn/SPCR_seed%/eval_test.json: runs/long$(1)/SPCR_seed%/eval_test.json
	$$(call recalibrate_and_evaluate,runs/long$(1)/SPCR_seed$$*/best.pt)
endef
# Each stage is EPOCHS:PREVIOUS; LONG_EPOCHS lists the EPOCHS of every stage.
LONG_STAGES := 160:120 200:160 240:200 280:240 320:280
$(foreach stage,$(LONG_STAGES),$(eval $(call spcr_stage,$(firstword $(subst :, ,$(stage))),$(lastword $(subst :, ,$(stage))))))
LONG_EPOCHS := $(foreach stage,$(LONG_STAGES),$(firstword $(subst :, ,$(stage))))

# A stage's results are written by the training runs themselves: make never deletes them.
.PRECIOUS: runs/long/SPCR_seed%/eval_test.json runs/long80/SPCR_seed%/eval_test.json \
	runs/long120/SPCR_seed%/eval_test.json \
	$(foreach epochs,$(LONG_EPOCHS),runs/long$(epochs)/SPCR_seed%/eval_test.json)

# The earlier protocol, kept for its table ("student initialised from the teacher"): teachers from
# scratch, students from their teacher's weights (a departure from the paper).
ablation-from-teacher: $(BENCH_DATA)/meta.json
	$(PY) -m robustseg_core.training.ablation --out runs/ablation --data-root $(BENCH_DATA) --seeds 0 1 2 --jobs 2 \
		--set model.pretrained=null --teacher-set train.epochs=16 \
		--student-set train.epochs=5 student.init_from_teacher=true optim.lr=5e-4

# Why HPDM and RRM help or not (docs/results.md): seed-0 variants against the ablation's seed-0 teacher.
VARIANT := $(PY) -m robustseg_core.training.ablation --teachers runs/ablation --seeds 0 --set model.pretrained=null \
	--student-set train.epochs=5 student.init_from_teacher=true optim.lr=5e-4
distill-variants: $(BENCH_DATA)/meta.json
	$(VARIANT) student.init_from_teacher=false --out runs/variants/from_scratch --methods S SPCR --jobs 2
	$(VARIANT) distill.hpdm_pairing=identity --out runs/variants/hpdm_identity --methods SPC
	$(VARIANT) distill.hpdm_temperature=4 --out runs/variants/hpdm_t4 --methods SPC
	$(PY) bench/distill_terms.py --teacher runs/ablation/teacher_seed0/best.pt --batches 4 \
		$(foreach r,S SR SPC SPCR,--student $(r)=runs/ablation/$(r)_seed0/best.pt) \
		--student "SPC identity pairing=runs/variants/hpdm_identity/SPC_seed0/best.pt" \
		--student "SPC temperature 4=runs/variants/hpdm_t4/SPC_seed0/best.pt" \
		$(foreach r,S SPCR,--student "$(r) from scratch=runs/variants/from_scratch/$(r)_seed0/best.pt")

.PHONY: ablation ablation-budget teacher-continued students-continued students-extended long-schedules long-extended long-spcr \
	long-spcr-extended $(foreach epochs,$(LONG_EPOCHS),long-spcr-$(epochs) long-spcr-$(epochs)-bn) ablation-from-teacher \
	distill-variants
