# Reference solution of labs/exercises/05-why-relayed.ipynb (kept apart from the exercise).
# Each "# %% GRADE_ID" section replaces the task cell whose nbgrader grade_id is GRADE_ID.

# %% 05-task-diagnose
verdicts = {}
for host, router in (("alice", "r1"), ("bob", "r2")):
    result = await lab.run(host, ["natkit", "nat-type", str(grading.STUN_SERVER), "--format", "json"])
    report = json.loads(result.stdout)
    verdicts[router] = report["mapping"]
    print(host, "behind", router, ":", report["verdict"])
HARD_ROUTER = next(r for r, mapping in verdicts.items() if mapping != "endpoint-independent")

# %% 05-task-fix
# keep r1's endpoint-independent mapping; filter by address only (RFC 4787 §5, Tailscale's easyaf)
routers = tuple(
    dataclasses.replace(r, nat=r.nat.replace(filtering="address-dependent")) if r.name == "r1" else r
    for r in original.routers
)
better = dataclasses.replace(original, routers=routers)
print("r1 now:", better.router("r1").nat.to_dict())
