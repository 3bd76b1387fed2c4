"""python-nomad (a third-party Nomad client) against the dev Nomad.

Usage: nomad_client.py <host> <port> <job.nomad.hcl>

Parses the job file, plans it (with diff), registers it, and reads what
clients read: the job, versions, summary, plan of an edit, the register
evaluation's allocations, job allocations, deployments and the allocation
itself; then a canary of a destructive change, refused promotion while it is
unhealthy, and promoted by group. Prints "python-nomad compat: ok" when every call answered as
Nomad's API documents; any mismatch raises.
"""

import sys
import time

import nomad
import nomad.api.exceptions


def wait(what, probe, timeout=30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def main():
    host, port, hcl_path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    n = nomad.Nomad(host=host, port=port, timeout=10)
    with open(hcl_path, encoding="utf-8") as f:
        job = n.jobs.parse(f.read(), canonicalize=True)
    job_id = job["ID"]
    # One group of one allocation keeps the run short.
    job["TaskGroups"] = job["TaskGroups"][:1]
    job["TaskGroups"][0]["Count"] = 1
    group = job["TaskGroups"][0]["Name"]

    plan = n.job.plan_job(job_id, {"Job": job}, diff=True)
    assert plan["Diff"]["Type"] == "Added", plan["Diff"]
    assert plan["Annotations"]["DesiredTGUpdates"][group]["Place"] == 1, plan

    reply = n.job.register_job(job_id, {"Job": job})
    eval_id = reply["EvalID"]
    assert reply["JobModifyIndex"] > 0, reply

    got = n.job.get_job(job_id)
    assert got["ID"] == job_id and got["Version"] == 0, got
    versions = n.job.get_versions(job_id)
    assert [v["Version"] for v in versions["Versions"]] == [0], versions
    summary = n.job.get_summary(job_id)
    assert group in summary["Summary"], summary

    allocs = wait("the evaluation's allocation", lambda: n.evaluation.get_allocations(eval_id))
    assert len(allocs) == 1 and allocs[0]["EvalID"] == eval_id, allocs
    alloc_id = allocs[0]["ID"]
    assert n.evaluation.get_evaluation(eval_id)["ID"] == eval_id

    running = wait(
        "a running allocation",
        lambda: [a for a in n.job.get_allocations(job_id) if a["ClientStatus"] == "running"],
    )
    assert running[0]["ID"] == alloc_id, running
    assert n.allocation.get_allocation(alloc_id)["JobID"] == job_id
    assert any(a["ID"] == alloc_id for a in n.allocations.get_allocations())

    deployment = wait("the deployment", lambda: n.job.get_deployment(job_id))
    assert deployment["JobID"] == job_id, deployment
    assert n.deployment.get_deployment(deployment["ID"])["ID"] == deployment["ID"]
    assert any(a["ID"] == alloc_id for a in n.deployment.get_deployment_allocations(deployment["ID"]))
    assert any(d["ID"] == deployment["ID"] for d in n.deployments.get_deployments())
    assert any(e["ID"] == eval_id for e in n.job.get_evaluations(job_id))

    # Plan an edit of the running job: a tags-only change is in place.
    edited = dict(job)
    edited["TaskGroups"] = [dict(job["TaskGroups"][0])]
    services = [dict(s) for s in job["TaskGroups"][0]["Services"]]
    services[0]["Tags"] = list(services[0].get("Tags") or []) + ["planned"]
    edited["TaskGroups"][0]["Services"] = services
    plan = n.job.plan_job(job_id, {"Job": edited}, diff=True)
    assert plan["Diff"]["Type"] == "Edited", plan["Diff"]
    assert plan["Annotations"]["DesiredTGUpdates"][group]["InPlaceUpdate"] == 1, plan
    assert plan["JobModifyIndex"] == reply["JobModifyIndex"], plan

    # A destructive change with a canary: it runs next to the old allocation
    # until promoted; promoting before it is healthy is refused.
    canary = dict(job)
    canary["TaskGroups"] = [dict(job["TaskGroups"][0])]
    canary["TaskGroups"][0]["Meta"] = {"version": "v9"}
    canary["TaskGroups"][0]["Update"] = dict(job["TaskGroups"][0]["Update"], Canary=1)
    n.job.register_job(job_id, {"Job": canary})
    pending = n.job.get_deployment(job_id)
    assert pending["TaskGroups"][group]["DesiredCanaries"] == 1, pending
    live = [a for a in n.job.get_allocations(job_id) if a["DesiredStatus"] == "run"]
    assert len(live) == 2 and alloc_id in [a["ID"] for a in live], live
    try:
        n.deployment.promote_deployment_all(pending["ID"])
        raise AssertionError("promoting an unhealthy canary was accepted")
    except nomad.api.exceptions.BaseNomadException as e:
        assert "is not healthy" in str(e.nomad_resp.text), e.nomad_resp.text
    wait(
        "a healthy canary",
        lambda: all(
            (a.get("DeploymentStatus") or {}).get("Healthy")
            for a in n.job.get_allocations(job_id)
            if a["ID"] != alloc_id and a["DesiredStatus"] == "run"
        ),
    )
    promoted = n.deployment.promote_deployment_groups(pending["ID"], [group])
    assert promoted["EvalID"], promoted
    wait(
        "the old allocation to stop",
        lambda: n.allocation.get_allocation(alloc_id)["DesiredStatus"] == "stop",
    )
    assert n.deployment.get_deployment(pending["ID"])["TaskGroups"][group]["Promoted"] is True

    n.job.deregister_job(job_id, purge=True)
    print("python-nomad compat: ok")


if __name__ == "__main__":
    main()
