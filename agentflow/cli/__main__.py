"""`python -m agentflow.cli` runs the `agentflow` command."""

from agentflow.cli._main import main

main(prog_name="agentflow")
