"""Many runs: sweep expansion, submitit launching (SLURM / local / debug), status."""
