"""Command line and the analysis levels (participant, group, train) with the demo and
accuracy commands: argument parsing, run orchestration and exit statuses; the top layer."""
