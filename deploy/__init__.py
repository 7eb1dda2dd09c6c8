"""Deployment files shipped with dynagen as package data: ``slurm/dynagen.sbatch`` (platform/slurm.py)."""
