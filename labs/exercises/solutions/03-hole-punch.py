# Reference solution of labs/exercises/03-hole-punch.ipynb (kept apart from the exercise).
# Each "# %% GRADE_ID" section replaces the task cell whose nbgrader grade_id is GRADE_ID.
# The cells run unchanged on every backend.

# %% 03-task-punch
async def public_endpoint(sock):
    """The endpoint STUN reports for sock (exercise 01)."""
    sock.sendto(bytes(STUN(txid=os.urandom(12))), grading.STUN_SERVER)
    data, _ = await sock.recv()
    mapped = STUN(data).getlayer(STUNXorMappedAddress)
    return Endpoint.parse(f"{mapped.ip}:{mapped.port}")


alice_public = await public_endpoint(alice_sock)
bob_public = await public_endpoint(bob_sock)
print("alice is", alice_public, "| bob is", bob_public)

for seq in range(5):  # both sides probe; the first probes open each side's own filter
    alice_sock.sendto(bytes(PunchProbe(seq=seq, sender=b"alice", target=str(bob_public).encode())), bob_public)
    bob_sock.sendto(bytes(PunchProbe(seq=seq, sender=b"bob", target=str(alice_public).encode())), alice_public)
    await lab.sleep(0.1)

for name, sock in (("alice", alice_sock), ("bob", bob_sock)):
    for data, source in await sock.recv_all():
        probe = PunchProbe(data)
        print(f"{name} got probe {probe.seq} from {probe.sender.decode()} via {source}")
