# The technician console on the USB serial: bytes from sys.stdin into
# lib/techconsole, answers back out. Lines end "\r\n" as a board's REPL
# ends them, and the prompt tells a script the answer is complete.
import sys

import asyncio

from techconsole import PROMPT, LineAssembler

ring = None  # the app's logring.LogRing: say() keeps its lines for `log`


def write(text):
    sys.stdout.write(text)


def say(line):
    # An unsolicited line (heartbeat, log): on a line of its own.
    if ring is not None:
        ring.add(line)
    write("\r\n" + line + "\r\n" + PROMPT)


async def serve(commands):
    reader = asyncio.StreamReader(sys.stdin)
    lines = LineAssembler()
    write("\r\n" + PROMPT)
    while True:
        # One byte at a time: a longer read blocks until it is filled.
        data = await reader.read(1)
        if not data:
            continue
        if isinstance(data, str):
            data = data.encode()
        for line in lines.feed(data):
            for out in commands.dispatch(line):
                write(out + "\r\n")
            write(PROMPT)
