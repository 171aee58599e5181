# Reference solution of labs/exercises/02-classify-nat.ipynb (kept apart from the exercise).
# Each "# %% GRADE_ID" section replaces the task cell whose nbgrader grade_id is GRADE_ID.
# The RFC 5780 tests by hand, from sockets on alice (every backend); `natkit nat-type` on alice gives the same verdict.

# %% 02-task-classify
PRIMARY = grading.STUN_SERVER


async def ask(sock, dest, change_ip=False, change_port=False):
    """One Binding request from sock; the answer's STUN layer, or None when nothing came back in 2 s."""
    attrs = [STUNChangeRequest(change_ip=int(change_ip), change_port=int(change_port))] if change_ip or change_port else []
    request = STUN(txid=os.urandom(12), attributes=attrs)
    sock.sendto(bytes(request), dest)
    while (got := await sock.recv(timeout=2.0)) is not None:
        answer = STUN(got[0])
        if answer.txid == request.txid:  # a late answer to an earlier test is not this test's answer
            return answer
    return None


def mapped(answer):
    layer = answer.getlayer(STUNXorMappedAddress)
    return f"{layer.ip}:{layer.port}"


# mapping, RFC 5780 §4.3: one socket, three destinations
sock = await lab.udp_socket("alice")
test1 = await ask(sock, PRIMARY)
other = test1.getlayer(STUNOtherAddress)
test2 = await ask(sock, Endpoint.parse(f"{other.ip}:{PRIMARY.port}"))
if mapped(test1) == mapped(test2):
    mapping = "endpoint-independent"
else:
    test3 = await ask(sock, Endpoint.parse(f"{other.ip}:{other.port}"))
    mapping = "address-dependent" if mapped(test2) == mapped(test3) else "address-and-port-dependent"
await sock.close()
print("mapping tests:", mapped(test1), mapped(test2), "->", mapping)

# filtering, RFC 5780 §4.4: a fresh socket that has sent only to the primary address
sock = await lab.udp_socket("alice")
await ask(sock, PRIMARY)
if await ask(sock, PRIMARY, change_ip=True, change_port=True) is not None:
    filtering = "endpoint-independent"
elif await ask(sock, PRIMARY, change_port=True) is not None:
    filtering = "address-dependent"
else:
    filtering = "address-and-port-dependent"
await sock.close()
print("filtering:", filtering)

ANSWER = {"mapping": mapping, "filtering": filtering}
