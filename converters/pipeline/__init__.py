"""Planning and running a build: stages grouped into jobs, the executor, the shared cache."""
