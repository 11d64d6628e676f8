"""Where jobs run: the local machine or SLURM, through submitit. Only this
package knows a backend's words (job ids, squeue/sacct states, submitit's
folders); the rest of the suite asks it to submit, poll, cancel and find logs."""
