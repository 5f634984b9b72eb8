"""The failover, failback, rehearsal clone and clean-up sequences, and ONTAP's error dialect,
through NetApp's own client (netapp-ontap) against drover's ONTAP simulator. Every answer must
parse in NetApp's client; every error must carry ONTAP's status, code and target."""

import time

import pytest
from netapp_ontap.error import NetAppRestError
from netapp_ontap.resources import (ClusterPeer, Job, SnapmirrorPolicy, SnapmirrorRelationship,
                                    SnapmirrorTransfer, Snapshot, Svm, SvmPeer, Volume)


def until(fetch, want, what, seconds=10):
    deadline = time.time() + seconds
    while True:
        got = fetch()
        if got == want:
            return
        assert time.time() < deadline, f"{what}: {got!r}, wanted {want!r}"
        time.sleep(0.05)


def relationship(conn, destination):
    found = list(SnapmirrorRelationship.get_collection(
        connection=conn, fields="uuid,state,healthy,lag_time,source.path,destination.path",
        **{"destination.path": destination}))
    assert len(found) == 1, found
    rel = found[0]
    rel.set_connection(conn)
    return rel


def state_of(rel):
    rel.get(fields="state")
    return rel.state


def set_state(rel, state):
    rel.state = state
    rel.patch(poll=True, poll_interval=0.05)
    until(lambda: state_of(rel), state, f"relationship {rel.uuid}")


def svm(conn, name):
    found = Svm.find(connection=conn, name=name, fields="uuid,name,state,subtype")
    found.set_connection(conn)
    return found


def set_svm(conn, name, state):
    s = svm(conn, name)
    s.state = state
    s.patch(poll=True, poll_interval=0.05)
    until(lambda: svm(conn, name).state, state, f"SVM {name}")


def failover(lab):
    west, east = lab.connection("west"), lab.connection("east")
    rel = relationship(west, "svm_dr:")
    assert rel.state == "snapmirrored" and rel.healthy
    transfer = SnapmirrorTransfer(rel.uuid)
    transfer.set_connection(west)
    transfer.post(hydrate=True, poll=True, poll_interval=0.05)
    assert transfer.uuid
    until(lambda: (transfer.get(), transfer.state)[1], "success", "transfer")
    set_state(rel, "paused")
    set_state(rel, "broken_off")
    set_svm(east, "svm1", "stopped")
    assert svm(west, "svm_dr").subtype == "default"
    set_svm(west, "svm_dr", "running")
    return west, east, rel


def test_failover(lab):
    failover(lab)


def test_failback_reverses_then_restores_the_original_direction(lab):
    west, east, rel = failover(lab)
    set_svm(west, "svm_dr", "stopped")
    # Reverse resync: the relationship moves to the original source's cluster.
    reverse = SnapmirrorRelationship(uuid=rel.uuid)
    reverse.source = {"path": "svm_dr:"}
    reverse.destination = {"path": "svm1:"}
    reverse.state = "snapmirrored"
    reverse.set_connection(west)
    reverse.patch(poll=True, poll_interval=0.05)
    back = relationship(east, "svm1:")
    until(lambda: state_of(back), "snapmirrored", "reversed relationship")
    set_state(back, "paused")
    set_state(back, "broken_off")
    set_svm(east, "svm1", "running")
    back.delete(poll=True, poll_interval=0.05, source_info_only=True)
    # The original direction again, from the common snapshots, then resynchronised.
    original = SnapmirrorRelationship.from_dict({"source": {"path": "svm1:"}, "destination": {"path": "svm_dr:"}})
    original.set_connection(west)
    original.post(hydrate=True, poll=True, poll_interval=0.05)
    assert original.uuid
    again = relationship(west, "svm_dr:")
    if again.state != "snapmirrored":
        set_state(again, "snapmirrored")
    assert svm(west, "svm_dr").subtype == "dp_destination"


def test_rehearsal_clone_and_clean_up(lab):
    west = lab.connection("west")
    parent = Volume.find(connection=west, name="app_data", fields="uuid,name,type", **{"svm.name": "svm_dr"})
    assert parent.type == "dp"
    snaps = list(Snapshot.get_collection(parent.uuid, connection=west, fields="name,create_time",
                                         order_by="create_time desc", max_records=1))
    assert len(snaps) == 1 and snaps[0].name.startswith("snapmirror.")
    clone = Volume.from_dict({
        "name": "app_data_rehearsal", "svm": {"name": "svm_dr"}, "nas": {"path": "/app_data_rehearsal"},
        "clone": {"is_flexclone": True, "parent_volume": {"name": "app_data"},
                  "parent_snapshot": {"name": snaps[0].name}}})
    clone.set_connection(west)
    clone.post(hydrate=True, poll=True, poll_interval=0.05)
    assert clone.uuid, "the Location header names the new volume"
    clone.get(fields="clone.*,nas.path,type")
    assert clone.clone.is_flexclone and clone.clone.parent_volume.name == "app_data"
    assert clone.type == "rw" and clone.nas.path == "/app_data_rehearsal"
    unmount = Volume(uuid=clone.uuid)
    unmount.nas = {"path": ""}
    unmount.set_connection(west)
    unmount.patch(poll=True, poll_interval=0.05)
    unmount.get(fields="nas.path")
    assert not getattr(getattr(unmount, "nas", None), "path", ""), "unmounted"
    clone.delete(poll=True, poll_interval=0.05)
    assert not list(Volume.get_collection(connection=west, name="app_data_rehearsal"))


def test_peers_policies_and_jobs_are_addressable(lab):
    west = lab.connection("west")
    for resource in (ClusterPeer, SvmPeer, SnapmirrorPolicy):
        records = list(resource.get_collection(connection=west))
        assert records, resource
        one = records[0]
        one.set_connection(west)
        one.get()
    list(Job.get_collection(connection=west, fields="uuid,state,message"))


def error_of(call):
    with pytest.raises(NetAppRestError) as caught:
        call()
    e = caught.value
    return e.status_code, (e.response_body or {}).get("error", {})


def test_the_error_dialect(lab):
    west = lab.connection("west")
    status, _ = error_of(lambda: list(Svm.get_collection(connection=lab.connection("west", password="wrong"))))
    assert status == 401
    missing = SnapmirrorRelationship(uuid="00000000-0000-0000-0000-000000000000")
    missing.set_connection(west)
    status, err = error_of(missing.get)
    assert (status, err.get("code"), err.get("target")) == (404, "4", "uuid")
    status, err = error_of(lambda: list(SnapmirrorRelationship.get_collection(connection=west, fields="uuid,no_such_field")))
    assert (status, err.get("code"), err.get("target")) == (400, "262197", "fields")
    status, err = error_of(lambda: list(SnapmirrorRelationship.get_collection(connection=west, **{"destination.pth": "x"})))
    assert (status, err.get("code"), err.get("target")) == (400, "262179", "destination.pth")
    status, err = error_of(lambda: list(SnapmirrorRelationship.get_collection(connection=west, max_records=0)))
    assert (status, err.get("target")) == (400, "max_records")
    status, err = error_of(lambda: list(SnapmirrorRelationship.get_collection(connection=west, return_timeout=500)))
    assert (status, err.get("target")) == (400, "return_timeout")
    rel = relationship(west, "svm_dr:")
    # validate_only (sent as Python's True) checks and changes nothing.
    rel.state = "broken_off"
    rel.patch(validate_only=True)
    assert state_of(rel) == "snapmirrored"
    set_state(rel, "broken_off")
    rel.state = "paused"
    status, err = error_of(lambda: rel.patch(poll=True, poll_interval=0.05))
    assert (status, err.get("code")) == (400, "13303818")
    # A resync while the DR SVM serves clients is refused by the cluster.
    set_svm(west, "svm_dr", "running")
    rel.state = "snapmirrored"
    status, err = error_of(lambda: rel.patch(poll=True, poll_interval=0.05))
    assert (status, err.get("code")) == (400, "13303828")
    # An unknown API is 404, not 405.
    host = lab.sites["west"][0]
    assert west.session.get(f"https://{host}/api/storage/volumez").status_code == 404


def test_a_failed_job_reports_ontaps_code_and_message(lab_with_a_failing_job):
    east = lab_with_a_failing_job.connection("east")
    s = svm(east, "svm1")
    s.state = "stopped"
    try:
        response = s.patch(poll=True, poll_interval=0.05)
        job = response.http_response.json()
    except NetAppRestError as e:
        job = {"state": "failure", "message": str(e)}
    assert job.get("state") == "failure" and "LIFs busy" in job.get("message", ""), job
