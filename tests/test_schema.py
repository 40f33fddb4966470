import pytest

from edge_core import schema
from edge_core.errors import ModelError


def test_tasks_in_dataset_order_with_budgets():
    assert schema.TASK_NAMES == ("phy", "frame", "app_type", "app")
    assert schema.PHY.classes == ("802.11b", "802.11g", "802.11n")
    assert schema.FRAME.classes == ("mgmt", "ctrl", "data")
    assert schema.APP_TYPE.classes == ("audio", "video", "none")
    assert schema.APP.classes == (
        "spotify",
        "tunein",
        "gpodcast",
        "youtube",
        "netflix",
        "twitch",
        "none",
    )
    assert [t.max_exec_ms for t in schema.TASKS] == [2.0, 2.0, 7.0, 7.0]
    assert schema.INPUT_LENGTH == 3000
    assert schema.REAL_LABEL_ORDER == ("frame", "phy", "app_type", "app")


def test_app_type_follows_from_app():
    assert set(schema.APP_TYPE_OF_APP) == set(schema.APP.classes)
    audio = {a for a, t in schema.APP_TYPE_OF_APP.items() if t == "audio"}
    assert audio == {"spotify", "tunein", "gpodcast"}


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (("802.11n", "ctrl", "audio", "spotify"), "cannot carry"),
        (("802.11n", "data", "video", "spotify"), "implies app_type"),
        (("802.11ac", "data", "none", "none"), "unknown phy label"),
        (("802.11n", "beacon", "none", "none"), "unknown frame label"),
    ],
)
def test_check_labels_rejects_impossible_packets(labels, message):
    with pytest.raises(ValueError, match=message):
        schema.check_labels(*labels)


def test_check_labels_accepts_dataset_packets():
    schema.check_labels("802.11n", "data", "video", "netflix")
    schema.check_labels("802.11b", "mgmt", "none", "none")
    schema.check_labels("802.11n", "data", "none", "none")


def test_schema_copy_round_trips_and_mismatch_is_named():
    copy = schema.as_dict()
    schema.check_schema(copy)
    copy["tasks"][3]["classes"] = ["a", "b"]
    with pytest.raises(ModelError, match="'app' classes"):
        schema.check_schema(copy, where="m.onnx")
    bad_len = schema.as_dict() | {"input_length": 1024}
    with pytest.raises(ModelError, match="input_length 1024"):
        schema.check_schema(bad_len)
