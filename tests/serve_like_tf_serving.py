"""Answers TF Serving predict requests from a SavedModel by TF Serving's rules, without tf_meta.

Usage: python serve_like_tf_serving.py SAVED_MODEL_DIR REQUEST [REQUEST ...]
  REQUEST.json: a REST predict body (POST /v1/models/<model>:predict) -> one stdout line,
    TF Serving's response body: {"outputs": ...} to a columnar ("inputs") request,
    {"predictions": [...]} to a row ("instances") request, {"error": "..."} to a refused one.
  REQUEST.pb: a serialized tensorflow.serving.PredictRequest (gRPC Predict; needs the
    tensorflow-serving-api package) -> its PredictResponse written to REQUEST.pb.response and
    one stdout line {"response": "REQUEST.pb.response"}, or {"error": "...", "code": "..."}
    (the gRPC status).
python serve_like_tf_serving.py -   (a server, as TF Serving stays up: each stdin line
  ["SAVED_MODEL_DIR", "REQUEST"] is answered by one stdout line, as above; one TensorFlow
  start-up for many requests, and each model loaded once)

Run as a separate process: tf_meta is made unimportable first, so the export must stand on
its own, as it does inside TF Serving. The TF Serving binary is not run; its request path is
followed rule by rule, from the source of github.com/tensorflow/serving (master after 2.20.0,
commit 9d981c5), the files and functions named at each rule:

Loading (servables/tensorflow/saved_model_bundle_factory.cc: tags default "serve", then
TensorFlow's LoadSavedModel). The meta graph tagged "serve" is loaded into a TF1 Session
(the tf.compat.v1 loader, TensorFlow's same loading), and every request runs that Session's
C++ DirectSession::Run (TF_SessionRun) on the signature's tensor names, as RunPredict does.
So an op's message names a fed input as the session feeds it, e.g. EnsureShape's "Shape of
tensor _arg_serving_default_query_images_0_0 [4,20,20,1] is not compatible with expected
shape [?,28,28,1]", where a TF2 call of the signature says "Shape of tensor query_images".

REST request -> PredictRequest (util/json_tensor.cc, FillPredictRequestFromJson):
 1. The body is a JSON object (ParseJson: "JSON Parse error: ... at offset: n", worded here
    by Python's parser; "... Is not object"); NaN and Infinity are numbers
    (kParseNanAndInfFlag). Keys other than the ones below are ignored.
 2. "signature_name": optional string (FillSignature), default "serving_default"; an unknown
    name: 'Serving signature name: "x" not found in signature def'
    (model_servers/http_rest_api_handler.cc, GetInfoMap).
 3. Exactly one of "instances" (row format) or "inputs" (columnar format); both or neither
    are refused.
 4. Columnar (FillTensorMapFromInputsMap): "inputs" is an object {input name: value} holding
    every input of the signature ("Missing named input: x in 'inputs' object."; names the
    signature lacks are ignored), or, for a signature of one input only, that input's value
    itself (a list, or one {"b64": ...}). Each input has its own shape: an episode with
    S support and Q query images, S != Q, is sent this way.
 5. Row (FillTensorMapFromInstancesList): "instances" is a non-empty list; with several
    inputs each element is an object with exactly the signature's input names ("Failed to
    process element: i of 'instances' list. JSON object: ... keys must be equal to: a,b,c"),
    with one input a plain value/list or {"b64": ...} ("instances": [img, img] or
    [{"b64": ...}, ...]). Each input's value must have one shape in every element
    (AddInstanceItem: "Expecting tensor size: ...", "Expecting shape ..."); the input is
    their stack, [len(instances), *shape]: every input shares the 0-th dimension, so an
    episode signature takes the row form only when S == Q.
 6. Shapes (GetDenseTensorShape, FillTensorProto): from the first element at each depth;
    every list at a depth must have that length ("Encountered list at unexpected size: ..."),
    values sit at the deepest level only ("... found at incorrect level: ...").
 7. Values (AddValueToTensor) by the signature input's dtype: float and double take any JSON
    number, integers included, cast to the dtype (no range check: 1e39 becomes inf);
    int32/int16/int8/uint8 take integers within int32 only, so 1.0 is refused (and int8/uint8
    /int16 wrap: no narrower check, Tensor::FromProto casts); int64, uint32, uint64 their
    integers; bool true/false; string a JSON string (its UTF-8 bytes) or {"b64": "..."},
    base64-decoded (IsValBase64Object: the object's only key; JsonDecodeBase64Object). A
    {"b64": ...} sent to a non-string input is refused: "JSON Value: {...} Type: Object is not
    of expected type: float" (TypeError; JsonValueToDebugString prints at most ~256 bytes).
REST then runs as gRPC Predict, and answers (json_tensor.cc, MakeJsonFromTensors):
 8. A columnar request -> {"outputs": {name: nested lists}} (the bare value when the
    signature has one output); a row request -> {"predictions": [{name: row value}, ...]}
    (bare row values with one output), which needs every output to share the 0-th dimension
    ("Tensor name: x has inconsistent batch size: ..."). Floats as the shortest %g that
    round-trips (WriteDecimal: 0.2, not 0.2000000030; NaN, Infinity); DT_STRING outputs as
    JSON strings of their bytes, or {"b64": ...} when the output's name ends in "_bytes"
    (IsNamedTensorBytes). Written here on one line (TF Serving pretty-prints).
 9. Any failure -> {"error": status.message()} (MakeJsonFromStatus; HTTP 400 for
    InvalidArgument).
gRPC Predict (servables/tensorflow/predict_util.cc RunPredict, PreProcessPrediction;
tensorflow/cc/saved_model/util.cc GetInputValues):
10. model_spec.signature_name, default "serving_default" ('Serving signature key "x" not
    found.', FAILED_PRECONDITION); the request's inputs must be the signature's
    (VerifyRequestInputsSize: "input size does not match signature: ..."; GetInputValues:
    "Inputs contains invalid name ..."), each TensorProto read as sent ("tensor parsing
    error: x"). Nothing compares a tensor's dtype or shape with the signature: tensors are
    fed as sent, and Session::Run refuses another dtype ("Expects arg[i] to be float but
    uint8 is provided", INVALID_ARGUMENT). output_filter picks outputs, default all; each
    output answered as a TensorProto of typed values (Tensor::AsProtoField).
"""

import base64
import decimal
import json
import math
import os
import re
import sys

sys.modules["tf_meta"] = None  # any `import tf_meta` now raises ImportError

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.core.framework import tensor_pb2  # noqa: E402
from tensorflow.core.protobuf import error_codes_pb2  # noqa: E402

DEFAULT_SIGNATURE = "serving_default"  # kDefaultServingSignatureDefKey
MAX_DEBUG_BYTES = 256  # json_tensor.cc: kMaxJsonDebugStringBytes


class Refused(Exception):
    """A request TF Serving refuses: its status code name and message."""

    def __init__(self, message, code="INVALID_ARGUMENT"):
        super().__init__(message)
        self.message, self.code = message, code


class ParseError(Refused):
    """A body that is not JSON (ParseJson), kept to be answered as an error."""


def main(model_dir, *request_paths):
    for path in request_paths:
        if path.endswith(".pb"):
            answer_grpc(model_dir, path)
        else:
            answer(model_dir, [read(path)])


def read(request_path):
    """A REST body parsed as TF Serving parses it (ParseJson), or the ParseError to answer."""
    with open(request_path, "rb") as f:
        return parse(f.read())


def answer(model_dir, bodies):
    """Prints TF Serving's response to each REST body (parsed, or `read`), one a line."""
    model = load(model_dir)
    for body in bodies:
        try:
            response = predict_rest(model, body)
        except Refused as e:
            response = {"error": e.message}
        print(write_json(response))


def answer_grpc(model_dir, request_path):
    """Answers the serialized PredictRequest at `request_path` as TF Serving's gRPC Predict:
    writes the PredictResponse beside it and prints {"response": path} or the status."""
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    with open(request_path, "rb") as f:
        request.ParseFromString(f.read())
    signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
    try:
        outputs = run_predict(load(model_dir), signature_name, request.inputs,
                              request.output_filter)
    except Refused as e:
        print(json.dumps({"error": e.message, "code": e.code}))
        return
    response = predict_pb2.PredictResponse()
    response.model_spec.name = request.model_spec.name
    response.model_spec.signature_name = signature_name
    for name, value in outputs.items():
        response.outputs[name].CopyFrom(as_proto_field(value))
    with open(request_path + ".response", "wb") as f:
        f.write(response.SerializeToString())
    print(json.dumps({"response": request_path + ".response"}))


# Loading: the TF1 loader's Session, as TF Serving's SavedModelBundle holds it.

_models = {}


class Model:
    def __init__(self, model_dir):
        self.graph = tf.Graph()
        self.session = tf.compat.v1.Session(graph=self.graph)
        with self.graph.as_default():
            meta_graph = tf.compat.v1.saved_model.loader.load(self.session, ["serve"],
                                                              model_dir)
        self.signatures = dict(meta_graph.signature_def)

    def run(self, feeds, fetches):
        """Session::Run: {tensor name: ndarray} fed as they are (no dtype conversion)."""
        tensor = self.graph.get_tensor_by_name
        feed = {tensor(name)._as_tf_output(): value for name, value in feeds.items()}
        try:
            return self.session._call_tf_sessionrun(
                None, feed, [tensor(name)._as_tf_output() for name in fetches], [], None)
        except tf.errors.OpError as e:
            raise Refused(e.message, error_codes_pb2.Code.Name(e.error_code))


def load(model_dir):
    """The loaded model of `model_dir` (kept, as TF Serving keeps a version loaded)."""
    pb = os.path.join(model_dir, "saved_model.pb")
    key = (os.path.realpath(model_dir), os.stat(pb).st_mtime_ns if os.path.exists(pb) else 0)
    if key not in _models:
        if len(_models) >= 4:
            _models.pop(next(iter(_models))).session.close()
        _models[key] = Model(model_dir)
    return _models[key]


# gRPC Predict: predict_util.cc RunPredict, PreProcessPrediction; cc/saved_model/util.cc.

def run_predict(model, name, inputs, output_filter=(), read=tf.make_ndarray):
    """{output name: ndarray} that signature `name` answers to `inputs` {alias: TensorProto}
    (a PredictRequest's; `read` makes a Tensor of one), or raises Refused."""
    if name not in model.signatures:
        raise Refused(f'Serving signature key "{name}" not found.', "FAILED_PRECONDITION")
    signature = model.signatures[name]
    sent, expected = set(inputs), set(signature.inputs)
    if len(sent) > len(expected) or (len(sent) < len(expected) and not signature.defaults):
        raise Refused(
            f"input size does not match signature: {len(sent)}!={len(expected)} "
            f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(expected))}}}). "
            f"Sent extra: {{{','.join(sorted(sent - expected))}}}. Missing but required: "
            f"{{{','.join(sorted(expected - sent))}}}.")
    feeds = {}
    for alias, info in sorted(signature.inputs.items()):  # GetInputValues
        if alias not in inputs:
            if alias not in signature.defaults:
                raise Refused(
                    f"Signature input alias: {alias}(feed name: {info.name}) not found in "
                    f"request and no default value provided. Inputs expected to be in the "
                    f"request {{{','.join(sorted(sent))}}}, or default input alias set: "
                    f"{','.join(sorted(signature.defaults))}")
            proto = signature.defaults[alias]
        else:
            proto = inputs[alias]
        try:
            feeds[info.name] = read(proto)  # Tensor::FromProto
        except Exception:
            raise Refused(f"tensor parsing error: {alias}")
    if sent - expected:
        raise Refused(f"Inputs contains invalid name. Used request inputs: "
                      f"{','.join(sorted(sent & expected))}, request input: "
                      f"{','.join(sorted(sent))}")
    aliases = list(output_filter)
    for alias in aliases:
        if alias not in signature.outputs:
            raise Refused(f"output tensor alias not found in signature: {alias} Outputs "
                          f"expected to be in the set {{{','.join(sorted(signature.outputs))}}}.")
        if aliases.count(alias) > 1:
            raise Refused(f"duplicate output tensor alias: {alias}")
    aliases = aliases or sorted(signature.outputs)
    values = model.run(feeds, [signature.outputs[alias].name for alias in aliases])
    return dict(zip(aliases, values))


PROTO_FIELDS = {tf.float32: "float_val", tf.float64: "double_val", tf.int32: "int_val",
                tf.int16: "int_val", tf.int8: "int_val", tf.uint8: "int_val",
                tf.int64: "int64_val", tf.bool: "bool_val", tf.string: "string_val",
                tf.uint32: "uint32_val", tf.uint64: "uint64_val"}


def as_proto_field(value):
    """A TensorProto of typed values, as Tensor::AsProtoField writes an output."""
    dtype = tf.string if value.dtype == object else tf.as_dtype(value.dtype)
    if dtype not in PROTO_FIELDS:
        return tf.make_tensor_proto(value)
    proto = tensor_pb2.TensorProto(dtype=dtype.as_datatype_enum,
                                   tensor_shape=tf.TensorShape(value.shape).as_proto())
    getattr(proto, PROTO_FIELDS[dtype]).extend(value.ravel().tolist())
    return proto


# REST: json_tensor.cc FillPredictRequestFromJson and MakeJsonFromTensors.

def predict_rest(model, body):
    """The REST response to `body` (a dict for write_json), or raises Refused."""
    if isinstance(body, ParseError):
        raise body
    if not isinstance(body, dict):
        raise Refused(f"JSON Value: {debug_string(body)} Is not object")
    name = body.get("signature_name", "")
    if "signature_name" in body and not isinstance(name, str):
        raise Refused(f"JSON Value: {debug_string(body)} not formatted correctly. "
                      "'signature_name' key must be a string value.")
    signature = model.signatures.get(name or DEFAULT_SIGNATURE)
    if signature is None:  # http_rest_api_handler.cc, GetInfoMap
        raise Refused(f'Serving signature name: "{name or DEFAULT_SIGNATURE}" not found in '
                      "signature def")
    dtypes = {alias: tf.as_dtype(info.dtype) for alias, info in signature.inputs.items()}
    if not dtypes:
        raise Refused(f"Failed to get input map for signature: {name or 'DEFAULT'}")
    if "instances" in body:
        if "inputs" in body:
            raise Refused(f"JSON Value: {debug_string(body)} Not formatted correctly expecting "
                          "only one of 'inputs' or 'instances' keys to exist ")
        if not isinstance(body["instances"], list):
            raise Refused(f"JSON Value: {debug_string(body)} Expecting 'instances' to be an "
                          "list/array")
        if not body["instances"]:
            raise Refused(f"JSON Value: {debug_string(body)} No values in 'instances' array")
        inputs, row = from_instances(body["instances"], dtypes), True
    elif "inputs" in body:
        inputs, row = from_inputs(body["inputs"], dtypes), False
    else:
        raise Refused("Missing 'inputs' or 'instances' key")
    # The PredictRequest's tensors, here already the arrays their TensorProtos would give.
    outputs = run_predict(model, name or DEFAULT_SIGNATURE, inputs, read=lambda x: x)
    return row_response(outputs) if row else columnar_response(outputs)


def is_b64(value):  # IsValBase64Object
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def from_inputs(value, dtypes):
    """FillTensorMapFromInputsMap: the columnar "inputs" -> {name: ndarray}."""
    if not isinstance(value, dict) or is_b64(value):
        if len(dtypes) > 1:
            raise Refused("inputs is a plain value/list, but expecting an object as multiple "
                          "input tensors required as per tensorinfo_map")
        (name, dtype), = dtypes.items()
        return {name: to_tensor(value, dtype)}
    tensors = {}
    for name, dtype in sorted(dtypes.items()):
        if name not in value:
            raise Refused(f"Missing named input: {name} in 'inputs' object.")
        tensors[name] = to_tensor(value[name], dtype)
    return tensors


def from_instances(instances, dtypes):
    """FillTensorMapFromInstancesList: the row "instances" -> {name: ndarray}."""
    def element_is_object(v):
        return isinstance(v, dict) and not is_b64(v)

    if not isinstance(instances[0], dict) and len(dtypes) > 1:
        raise Refused("instances is a plain list, but expecting list of objects as multiple "
                      "input tensors required as per tensorinfo_map")
    objects = element_is_object(instances[0])
    rows = {}  # name -> list of per-instance arrays

    def add(item, name):  # AddInstanceItem
        if name not in dtypes:
            raise Refused(f"JSON object: does not have named input: {name}")
        tensor = to_tensor(item, dtypes[name])
        if rows.get(name):
            first = rows[name][0]
            if first.size != tensor.size:
                raise Refused(f"Expecting tensor size: {first.size} but got: {tensor.size}")
            if first.shape != tensor.shape:
                raise Refused(f"Expecting shape {shape_string(first.shape)} but got: "
                              f"{shape_string(tensor.shape)}")
        rows.setdefault(name, []).append(tensor)

    for i, element in enumerate(instances):
        if objects:
            if not element_is_object(element):
                raise Refused(f"Expecting object but got list at item {i} of input list")
            for name, item in element.items():
                try:
                    add(item, name)
                except Refused as e:
                    raise Refused(f"Failed to process element: {i} key: {name} of 'instances' "
                                  f"list. Error: {e.code}: {e.message}")
            if set(element) != set(dtypes):
                raise Refused(f"Failed to process element: {i} of 'instances' list. JSON "
                              f"object: {debug_string(element)} keys must be equal to: "
                              f"{','.join(sorted(dtypes))}")
        else:
            if element_is_object(element):
                raise Refused(f"Expecting value/list but got object at item {i} of input list")
            try:
                add(element, sorted(dtypes)[0])  # the map's first input (one input here)
            except Refused as e:
                raise Refused(f"Failed to process element: {i} of 'instances' list. Error: "
                              f"{e.code}: {e.message}")
    return {name: np.stack(arrays) for name, arrays in rows.items()}


def shape_string(shape):
    return "[" + ",".join(str(d) for d in shape) + "]"


def dense_shape(value):
    """GetDenseTensorShape: the shape read from the first element at each depth."""
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def to_tensor(value, dtype):
    """A JSON value -> ndarray of the input's `dtype` (FillTensorProto, AddValueToTensor)."""
    shape = dense_shape(value)
    fast = numeric_fast_path(value, dtype, shape)
    if fast is not None:
        return fast
    values = []
    fill(value, 0, dtype, shape, values)
    return np.array(values, dtype=NUMPY[dtype]).reshape(shape)


# Values each dtype takes: (the Python types of parsed JSON, the integer range).
INT32, INT64 = (-2 ** 31, 2 ** 31 - 1), (-2 ** 63, 2 ** 63 - 1)
TAKES = {tf.float32: ((int, float), None), tf.float64: ((int, float), None),
         tf.int32: ((int,), INT32), tf.int16: ((int,), INT32), tf.int8: ((int,), INT32),
         tf.uint8: ((int,), INT32), tf.int64: ((int,), INT64),
         tf.uint32: ((int,), (0, 2 ** 32 - 1)), tf.uint64: ((int,), (0, 2 ** 64 - 1)),
         tf.bool: ((bool,), None), tf.string: ((str,), None)}
NUMPY = {tf.string: object, **{d: d.as_numpy_dtype for d in TAKES if d != tf.string}}


def takes(value, dtype):
    types, bounds = TAKES[dtype]
    if type(value) not in types:  # bool is an int in Python, not in JSON
        return False
    return bounds is None or bounds[0] <= value <= bounds[1]


def numeric_fast_path(value, dtype, shape):
    """The same tensor `fill` makes, found with numpy when every leaf is a value the dtype
    takes (large pixel lists); None sends the value through `fill` for its exact error."""
    if dtype == tf.string or dtype not in TAKES or not shape:
        return None
    try:
        leaves = np.array(value, dtype=object)
    except ValueError:
        return None
    if leaves.shape != tuple(shape):
        return None
    flat = leaves.ravel().tolist()
    types, bounds = TAKES[dtype]
    if not set(map(type, flat)) <= set(types):
        return None
    if bounds is not None and flat and not (bounds[0] <= min(flat) and max(flat) <= bounds[1]):
        return None
    return as_dtype(flat, dtype).reshape(shape)


def as_dtype(values, dtype):
    """Python numbers -> the dtype as TF Serving stores them: floats through double
    (rapidjson's GetFloat), the narrow integers through int32 (int_val), cast as C++ casts."""
    if dtype in (tf.float32, tf.float64):
        with np.errstate(over="ignore"):
            return np.array([double(v) for v in values], np.float64).astype(NUMPY[dtype])
    if TAKES[dtype][1] == INT32:
        return np.array(values, np.int32).astype(NUMPY[dtype])
    return np.array(values, dtype=NUMPY[dtype])


def double(v):
    try:
        return float(v)
    except OverflowError:  # an integer beyond double's range
        return math.copysign(math.inf, v)


def fill(value, level, dtype, shape, values):
    """FillTensorProto: appends `value`'s leaves to `values`, or raises TF Serving's error."""
    rank = len(shape)
    if not isinstance(value, list):
        if level != rank:
            raise Refused(f"JSON Value: {debug_string(value)} found at incorrect level: "
                          f"{level + 1} in the JSON DOM. Expected at level: {rank}")
        if isinstance(value, dict):
            if dtype != tf.string:
                raise type_error(value, dtype)
            values.append(b64_decode(value))
        else:
            values.append(add_value(value, dtype))
        return
    if level >= rank:
        raise Refused(f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(value) != shape[level]:
        raise Refused(f"Encountered list at unexpected size: {len(value)} at level: {level} "
                      f"expected size: {shape[level]}")
    for v in value:
        fill(v, level + 1, dtype, shape, values)


def add_value(value, dtype):
    """AddValueToTensor: one JSON value converted to `dtype`, or TF Serving's TypeError."""
    if dtype not in TAKES:
        raise Refused(f"Conversion of JSON Value: {debug_string(value)} to type: "
                      f"{type_string(dtype)}", "UNIMPLEMENTED")
    if dtype in (tf.float32, tf.float64):
        if type(value) not in (int, float):
            raise type_error(value, dtype)
    elif not takes(value, dtype):
        raise type_error(value, dtype)
    if dtype == tf.string:
        return value.encode("utf-8", "surrogatepass")
    return as_dtype([value], dtype)[0] if dtype != tf.bool else value


def b64_decode(value):
    """JsonDecodeBase64Object: {"b64": "..."} -> its bytes, as absl::Base64Unescape reads
    them: the standard alphabet, ASCII whitespace skipped, then no padding or exactly the
    padding due ('=' or '.')."""
    if not is_b64(value):
        raise Refused(f"JSON Value: {debug_string(value)} not formatted correctly for base64 "
                      "data")
    found = re.fullmatch(r"([A-Za-z0-9+/ \t\n\v\f\r]*)([=. \t\n\v\f\r]*)", value["b64"])
    data = found and re.sub(r"[ \t\n\v\f\r]", "", found.group(1))
    if not found or len(data) % 4 == 1 or sum(c in "=." for c in found.group(2)) not in (
            0, (4 - len(data) % 4) % 4):
        raise Refused("Unable to base64 decode")
    return base64.b64decode(data + "=" * ((4 - len(data) % 4) % 4))


def type_string(dtype):
    """DataTypeString: float32 is "float", float64 "double", float16 "half"."""
    return {"float32": "float", "float64": "double", "float16": "half"}.get(dtype.name,
                                                                             dtype.name)


def json_type(value):  # JsonTypeString
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "True" if value else "False"
    return {dict: "Object", list: "Array", str: "String"}.get(type(value), "Number")


def type_error(value, dtype):
    return Refused(f"JSON Value: {debug_string(value)} Type: {json_type(value)} is not of "
                   f"expected type: {type_string(dtype)}")


# JSON in and out, as rapidjson reads and writes it.

def parse(raw):
    """ParseJson: bytes -> the JSON value, or a ParseError. First of duplicate keys wins
    (rapidjson's FindMember), NaN/Infinity/-Infinity are numbers."""
    if not raw.strip():
        return ParseError("JSON Parse error: The document is empty")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return ParseError(f"JSON Parse error: Invalid encoding in string. at offset: {e.start}")
    try:
        return json.loads(text, object_pairs_hook=first_key_wins)
    except json.JSONDecodeError as e:
        return ParseError(f"JSON Parse error: {e.msg} at offset: {e.pos}")


def first_key_wins(pairs):
    found = {}
    for key, value in pairs:
        found.setdefault(key, value)
    return found


class _Unwritable(Exception):
    """rapidjson's writer refused a value (NaN, Infinity): nothing more is written."""


def debug_string(value):
    """JsonValueToDebugString: rapidjson's PrettyWriter (arrays on one line, objects indented
    by 4), each write made only while less than 256 bytes are written."""
    written = b""
    try:
        for piece in pretty_pieces(value, []):
            if len(written) >= MAX_DEBUG_BYTES:
                break
            written += piece.encode("utf-8", "surrogatepass")
    except _Unwritable as e:
        if len(written) < MAX_DEBUG_BYTES:
            written += e.args[0].encode()
    return written.decode("utf-8", "replace")


def pretty_pieces(value, stack):
    """The strings a PrettyWriter(kFormatSingleLineArray) writes for `value`, one per call;
    `stack` holds [in_array, value_count] of the enclosing levels."""
    def prefix():
        if not stack:
            return ""
        in_array, count = stack[-1]
        stack[-1][1] += 1
        if in_array:
            return ", " if count else ""
        if count:
            return ",\n" + "    " * len(stack) if count % 2 == 0 else ": "
        return "\n" + "    " * len(stack)

    if isinstance(value, dict):
        yield prefix() + "{"
        stack.append([False, 0])
        for key, item in value.items():
            yield from pretty_pieces(key, stack)
            yield from pretty_pieces(item, stack)
        empty = stack.pop()[1] == 0
        yield ("" if empty else "\n" + "    " * len(stack)) + "}"
    elif isinstance(value, list):
        yield prefix() + "["
        stack.append([True, 0])
        for item in value:
            yield from pretty_pieces(item, stack)
        stack.pop()
        yield "]"
    elif isinstance(value, float) and not math.isfinite(value):
        raise _Unwritable(prefix())  # the separator is written, the number is not
    else:
        yield prefix() + scalar_text(value)


def scalar_text(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + "".join(ESCAPES.get(c, c) if c >= " " else ESCAPES.get(
            c, f"\\u{ord(c):04X}") for c in value) + '"'
    if isinstance(value, int):
        return str(value)
    return rapidjson_double(value)


ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r",
           "\t": "\\t"}


def rapidjson_double(x):
    """rapidjson's Writer::WriteDouble of a finite x (shortest digits, internal::Prettify)."""
    sign = "-" if math.copysign(1.0, x) < 0 else ""
    if x == 0:
        return sign + "0.0"
    digits, exponent = decimal.Decimal(repr(abs(x))).normalize().as_tuple()[1:]
    d, length = "".join(map(str, digits)), len(digits)
    kk = length + exponent
    if 0 <= exponent and kk <= 21:
        text = d + "0" * exponent + ".0"
    elif 0 < kk <= 21:
        text = d[:kk] + "." + d[kk:]
    elif -6 < kk <= 0:
        text = "0." + "0" * -kk + d
    else:
        text = (d if length == 1 else d[0] + "." + d[1:]) + f"e{kk - 1}"
    return sign + text


class Raw(str):
    """A number written as is (WriteDecimal's RawValue)."""


def write_decimal(x, dtype):
    """WriteDecimal: %g of 6 digits if it round-trips in `dtype`, else max_digits10."""
    if math.isnan(x):
        return Raw("NaN")
    if math.isinf(x):
        return Raw("-Infinity" if x < 0 else "Infinity")
    text = "%.6g" % x
    if dtype(float(text)) != dtype(x):
        text = "%.*g" % (9 if dtype == np.float32 else 17, x)
    if "." not in text and "e" not in text:
        text += ".0"
    return Raw(text)


def json_values(value, name):
    """An output ndarray (or one row of it) as the JSON values TF Serving writes."""
    if value.dtype == np.float32 or value.dtype == np.float64:
        kind = value.dtype.type
        return nested(value, lambda v: write_decimal(float(v), kind))
    if value.dtype == object:  # DT_STRING
        if name.endswith("_bytes"):  # IsNamedTensorBytes
            return nested(value, lambda v: {"b64": base64.b64encode(v).decode("ascii")})
        return nested(value, lambda v: v.decode("utf-8", "replace"))
    return value.tolist()


def nested(value, convert):
    if not isinstance(value, np.ndarray):
        return convert(value)
    if value.ndim == 0:
        return convert(value[()])
    return [nested(v, convert) for v in value]


def columnar_response(outputs):  # MakeColumnarFormatJsonFromTensors
    if len(outputs) == 1:
        (name, value), = outputs.items()
        return {"outputs": json_values(value, name)}
    return {"outputs": {name: json_values(value, name) for name, value in outputs.items()}}


def row_response(outputs):  # MakeRowFormatJsonFromTensors
    batch = None
    for name, value in outputs.items():
        if value.ndim == 0:
            raise Refused(f"Tensor name: {name} has no shape information ")
        if batch is not None and value.shape[0] != batch:
            raise Refused(f"Tensor name: {name} has inconsistent batch size: {value.shape[0]} "
                          f"expecting: {batch}")
        batch = value.shape[0]
    rows = []
    for i in range(batch):
        row = {name: json_values(value[i, ...], name) for name, value in outputs.items()}
        rows.append(row if len(outputs) > 1 else next(iter(row.values())))
    return {"predictions": rows}


def write_json(value):
    """One line of JSON, numbers from write_decimal written as they are."""
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict):
        return "{" + ", ".join(json.dumps(k, ensure_ascii=False) + ": " + write_json(v)
                               for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(map(write_json, value)) + "]"
    return json.dumps(value, ensure_ascii=False)


def serve_forever():
    for line in sys.stdin:
        main(*json.loads(line))
        sys.stdout.flush()


if __name__ == "__main__":
    serve_forever() if sys.argv[1:] == ["-"] else main(*sys.argv[1:])
