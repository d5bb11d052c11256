#!/usr/bin/env python3
"""Checks the deployment files without Docker: docker-compose.yml and every
YAML under deploy/ parse, every service has an image or a build, depends_on
names existing services, and every host path a service mounts or builds from
exists. Needs PyYAML (Debian: python3-yaml). Exit 1 with a list of problems."""
import pathlib
import sys

import yaml

root = pathlib.Path(__file__).resolve().parent.parent
problems = []

compose = yaml.safe_load((root / "docker-compose.yml").read_text())
services = compose.get("services") or {}
volumes = set((compose.get("volumes") or {}).keys())
for needed in ["kafka", "kafka-init", "churnwatch", "prometheus", "alertmanager", "grafana"]:
    if needed not in services:
        problems.append(f"service {needed} is missing")
for name, svc in services.items():
    if "image" not in svc and "build" not in svc:
        problems.append(f"{name}: neither image nor build")
    build = svc.get("build")
    if isinstance(build, str):
        build = {"context": build}
    if build:
        ctx = root / build.get("context", ".")
        if not ctx.is_dir():
            problems.append(f"{name}: build context {ctx} missing")
        df = ctx / build.get("dockerfile", "Dockerfile")
        if not df.is_file():
            problems.append(f"{name}: Dockerfile {df} missing")
    deps = svc.get("depends_on") or []
    for dep in deps if isinstance(deps, list) else deps.keys():
        if dep not in services:
            problems.append(f"{name}: depends_on unknown service {dep}")
    for v in svc.get("volumes") or []:
        src = v.split(":")[0] if isinstance(v, str) else v.get("source", "")
        if src.startswith((".", "/")):
            if not (root / src).exists():
                problems.append(f"{name}: mounts {src}, which does not exist")
        elif src and src not in volumes:
            problems.append(f"{name}: named volume {src} is not declared")

for f in sorted((root / "deploy").rglob("*.yml")):
    try:
        yaml.safe_load(f.read_text())
    except yaml.YAMLError as e:
        problems.append(f"{f.relative_to(root)}: {e}")

if problems:
    print("\n".join(problems))
    sys.exit(1)
print(f"OK: {len(services)} services, every referenced file exists")
