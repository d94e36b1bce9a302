# Convenience targets; each is the same as the script it calls (README: the two commands).
.PHONY: setup test demo bench colcon
setup:
	bash scripts/setup.sh
test:
	bash scripts/test.sh
demo:
	bash scripts/demo.sh
colcon: setup
	bash scripts/check-colcon.sh
bench: setup
	.venv/bin/python benchmarks/transport.py
