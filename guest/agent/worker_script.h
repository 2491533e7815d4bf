#pragma once
// The Python side of the warm eval worker, run as `python3 -u -c kWorkerScript`.
// Wire (both directions, on fds 3 = requests in and 4 = replies out): u32 little-endian length +
// UTF-8 JSON object. First message from the worker: {"hello": true, "numpy": ver|null,
// "python": ver}. Requests: {"code": str}. Replies: {"value": str|null, "stdout": str,
// "error": str|null}. Long strings are cut so a reply stays well under the frame limit.
// Reseed (after a restore): {"reseed": 64 hex chars, "env": {name: value}} reseeds `random` and,
// when numpy is imported, numpy's legacy global RNG, from os.urandom mixed with the salt, and sets
// env in os.environ. Reply: {"reseeded": true, "numpy": bool} or {"reseeded": false, "error": str}.
namespace forkd::agent {

inline constexpr const char* kWorkerScript = R"PY(
import os, sys, io, json, struct, traceback, contextlib
RFD, WFD = 3, 4
LIMITS = {'value': 128 * 1024, 'stdout': 256 * 1024, 'error': 64 * 1024}

def read_exact(n):
    parts = []
    while n > 0:
        chunk = os.read(RFD, min(n, 1 << 20))
        if not chunk:
            os._exit(0)
        parts.append(chunk)
        n -= len(chunk)
    return b''.join(parts)

def send(obj):
    data = json.dumps(obj).encode('utf-8')
    msg = struct.pack('<I', len(data)) + data
    view = memoryview(msg)
    while view:
        n = os.write(WFD, view)
        view = view[n:]

def clean(s, key):
    if s is None:
        return None
    if len(s) > LIMITS[key]:
        s = s[:LIMITS[key]] + '\n...[truncated]'
    return s.encode('utf-8', 'replace').decode('utf-8')

g = {'__name__': '__main__', '__builtins__': __builtins__}
try:
    import numpy
    g['numpy'] = numpy
    g['np'] = numpy
    numpy_version = numpy.__version__
except Exception:
    numpy_version = None
send({'hello': True, 'numpy': numpy_version, 'python': sys.version.split()[0]})

def reseed(req):
    import hashlib, random
    salt = bytes.fromhex(req['reseed'])
    random.seed(os.urandom(32) + salt)
    np = sys.modules.get('numpy')
    if np is not None:
        words = struct.unpack('<8I', hashlib.sha256(os.urandom(32) + salt).digest())
        np.random.seed(list(words))
    for k, v in (req.get('env') or {}).items():
        os.environ[str(k)] = str(v)
    return {'reseeded': True, 'numpy': np is not None}

while True:
    n = struct.unpack('<I', read_exact(4))[0]
    try:
        req = json.loads(read_exact(n).decode('utf-8', 'replace'))
        if 'reseed' in req:
            try:
                send(reseed(req))
            except Exception as e:
                send({'reseeded': False, 'error': repr(e)[:512]})
            continue
        code = req.get('code', '')
    except Exception:
        send({'value': None, 'stdout': '', 'error': 'bad request to worker'})
        continue
    out = io.StringIO()
    value = None
    err = None
    try:
        with contextlib.redirect_stdout(out):
            try:
                compiled = compile(code, '<eval>', 'eval')
                is_expr = True
            except SyntaxError:
                compiled = compile(code, '<eval>', 'exec')
                is_expr = False
            result = eval(compiled, g)
            if is_expr:
                value = repr(result)
    except BaseException:
        err = traceback.format_exc()
    try:
        send({'value': clean(value, 'value'), 'stdout': clean(out.getvalue(), 'stdout'),
              'error': clean(err, 'error')})
    except Exception:
        send({'value': None, 'stdout': '', 'error': 'could not encode the result'})
)PY";

}  // namespace forkd::agent
