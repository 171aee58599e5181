# Reference solution of labs/exercises/04-broken-router.ipynb (kept apart from the exercise).
# Each "# %% GRADE_ID" section replaces the task cell whose nbgrader grade_id is GRADE_ID.

# %% 04-task-fix
routers = tuple(dataclasses.replace(r, nat=r.nat.replace(wan_input="drop")) for r in broken.routers)
fixed = dataclasses.replace(broken, routers=routers)
for router in fixed.routers:
    print(router.name, "wan_input:", router.nat.wan_input)
