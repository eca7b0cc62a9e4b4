"""Tag templates, per-file record fields, and the option checks around them."""

from __future__ import annotations

import pytest

from sidecar.errors import ConfigError
from sidecar.modes.agent.records import RecordShape, TagTemplate, file_stem, parse_fields, pod_identity

POD = {"pod": "shop-7d9f", "namespace": "prod", "node": "node-1", "container": "app"}


def test_pod_identity_reads_the_downward_api_variables_that_are_set() -> None:
    env = {"POD_NAME": "shop-7d9f", "POD_NAMESPACE": "prod", "NODE_NAME": "", "HOME": "/root"}
    assert pod_identity(env) == {"pod": "shop-7d9f", "namespace": "prod"}


def test_tag_template_fills_file_and_pod_placeholders() -> None:
    tag = TagTemplate("kube.{namespace}.{pod}.{container}.{file_stem}", POD)
    assert tag.render("/var/log/app/access.log") == "kube.prod.shop-7d9f.app.access"
    assert TagTemplate("{file}", {}).render("/var/log/app/access.log") == "access.log"


def test_file_stem_drops_only_the_last_suffix() -> None:
    assert file_stem("/logs/app.log") == "app"
    assert file_stem("/logs/app.2024.log") == "app.2024"
    assert file_stem("/logs/messages") == "messages"


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("kube.{podname}", "--tag 'kube.{podname}': unknown placeholder {podname}"),
        ("kube.{pod!r}", "--tag 'kube.{pod!r}': unknown placeholder {pod}"),
        ("kube.{0}", "--tag 'kube.{0}': unknown placeholder {0}"),
        ("kube.{pod", "--tag 'kube.{pod':"),
        ("", "--tag is empty"),
    ],
)
def test_bad_tag_template_is_a_config_error_naming_the_option(template: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        TagTemplate(template, POD)
    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value)


def test_tag_using_a_pod_variable_that_is_not_set_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"uses \{node\} but NODE_NAME is not set"):
        TagTemplate("kube.{node}", {"pod": "x"})


def test_fields_are_key_value_pairs_and_the_last_repeat_wins() -> None:
    assert parse_fields(["cluster=eu-west", "team=", "cluster=eu", "url=a=b"]) == {
        "cluster": "eu",
        "team": "",
        "url": "a=b",
    }


@pytest.mark.parametrize("pair", ["novalue", "=x", " =x"])
def test_field_without_a_key_is_a_config_error(pair: str) -> None:
    with pytest.raises(ConfigError, match="--field"):
        parse_fields([pair])


def test_file_shape_has_path_pod_and_static_fields_but_never_the_message_key() -> None:
    shape = RecordShape(
        TagTemplate("sidecar.{file_stem}", POD),
        message_key="log",
        file_key="path",
        static={"cluster": "eu", "log": "x", "pod": "overridden"},
        pod=POD,
    )
    file_shape = shape.for_path("/logs/web.log")
    assert file_shape.tag == "sidecar.web"
    assert file_shape.fields == {
        "path": "/logs/web.log",
        "pod": "overridden",
        "namespace": "prod",
        "node": "node-1",
        "container": "app",
        "cluster": "eu",
    }
    assert shape.for_path("/logs/web.log") is file_shape


def test_empty_file_key_leaves_the_path_out() -> None:
    shape = RecordShape(TagTemplate("t", {}), message_key="msg", file_key="", static={}, pod={})
    assert shape.for_path("/logs/a.log").fields == {}


def test_empty_message_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="--message-key"):
        RecordShape(TagTemplate("t", {}), message_key="", file_key="file", static={}, pod={})
