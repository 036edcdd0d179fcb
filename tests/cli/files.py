"""YAML files the CLI tests apply and run."""

from __future__ import annotations

CRONJOB_YAML = """\
apiVersion: cronloop.dev/v1
kind: CronJob
metadata:
  name: nightly
  labels: {team: ops}
spec:
  schedule: "0 3 * * *"
  timeZone: Europe/Paris
  jobTemplate:
    targets: [eu, us]
    main:
      runtime: process
      argv: [echo, hello]
      env: {DB_PASSWORD: hunter2}
"""

JOB_YAML = """\
apiVersion: cronloop.dev/v1
kind: Job
metadata:
  name: adhoc
spec:
  targets: [eu, us]
  main: {runtime: process, argv: [echo, hi]}
"""
