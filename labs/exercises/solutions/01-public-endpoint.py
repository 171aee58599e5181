# Reference solution of labs/exercises/01-public-endpoint.ipynb (kept apart from the exercise).
# Each "# %% GRADE_ID" section replaces the task cell whose nbgrader grade_id is GRADE_ID
# (tests/labs/test_exercises.py runs the notebook with these cells and expects every check to pass).
# The cells run in the notebook's kernel: top-level await is allowed there. They run unchanged on every backend.

# %% 01-task-stun
request = STUN(txid=os.urandom(12))  # Binding Request, RFC 8489 §6
sock.sendto(bytes(request), grading.STUN_SERVER)
data, source = await sock.recv()  # the next datagram to alice's socket: the server's answer
answer = STUN(data)
answer.show()
assert answer.txid == request.txid, "not the answer to our request"
mapped = answer.getlayer(STUNXorMappedAddress)  # RFC 8489 §14.2: in clear here, XORed on the wire
MY_PUBLIC_ENDPOINT = f"{mapped.ip}:{mapped.port}"
print("alice's public endpoint:", MY_PUBLIC_ENDPOINT, "(answer from", source, ")")
