"""Hypothesis strategies for protocol frames (SPEC 4), shared by the codec and hub property tests."""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from halswarm.protocol import (
    Ack,
    AuthState,
    AuthStateEntry,
    Command,
    CommandResult,
    CommandTarget,
    CredentialSync,
    ErrorMsg,
    Event,
    Heartbeat,
    ProjectRef,
    Register,
    Registered,
)
from halswarm.protocol.messages import RESOURCE_KEYS, OutboxStats

# Deterministic for CI: examples derived from the test itself (no random seed, no example database),
# bounded, and no per-example deadline (a loaded CI core must not turn slowness into a failure).
PROPS = settings(derandomize=True, max_examples=200, deadline=None, database=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# Wire text: any Unicode scalar value (lone surrogates are not JSON text and the decoder refuses them).
text = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
nonempty = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=40)
# JSON numbers the codec keeps exactly: 64-bit integers and finite doubles.
i64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
u63 = st.integers(min_value=0, max_value=2**63 - 1)
finite = st.floats(allow_nan=False, allow_infinity=False)
json_values = st.recursive(
    st.none() | st.booleans() | i64 | finite | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=20,
)
json_objects = st.dictionaries(text, json_values, max_size=4)
resources = st.dictionaries(st.sampled_from(RESOURCE_KEYS), finite)

messages = st.one_of(
    st.builds(Register, node_id=nonempty, hostname=text, version=text,
              projects=st.lists(st.builds(ProjectRef, nonempty, text), max_size=3),
              capabilities=json_objects, resources=resources,
              sessions=st.lists(st.fixed_dictionaries({"id": nonempty}, optional={"status": text}), max_size=3),
              last_acked_seq=u63),
    st.builds(Registered, nonempty, u63, st.integers(1, 2**31), st.none() | i64),
    st.builds(Heartbeat, resources=resources,
              outbox=st.none() | st.builds(OutboxStats, u63, st.integers(1, 2**63 - 1), u63)),
    st.builds(Event, seq=st.integers(1, 2**63 - 1), event_id=nonempty, type=nonempty,
              session_id=st.none() | text, project=st.none() | text, data=json_values, timestamp=finite),
    st.builds(Ack, u63),
    st.builds(Command, command_id=nonempty, type=nonempty,
              target=st.builds(CommandTarget, st.none() | nonempty, st.none() | nonempty, st.none() | nonempty),
              args=json_objects, timeout_ms=st.integers(1, 2**63 - 1)),
    st.builds(CommandResult, nonempty, st.sampled_from(["success", "failure", "timeout"]), json_values,
              st.none() | text),
    st.builds(AuthState, st.lists(st.builds(AuthStateEntry, nonempty, nonempty, text,
                                            st.none() | finite | text), max_size=3)),
    st.builds(CredentialSync, u63),
    st.builds(ErrorMsg, nonempty, text, st.none() | text),
)
