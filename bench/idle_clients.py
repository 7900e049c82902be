"""Opens COUNT connections to a proxy and leaves them idle.

mode http: each connection sends one keep-alive GET and reads the whole
response, so the proxy holds an idle keep-alive client connection.
mode ws: each connection sends a WebSocket upgrade and reads the 101, so the
proxy holds an idle tunnel (and its upstream connection).

Prints "ready N" once every connection is idle, then holds them until stdin
closes. Used by bench/idle.sh; no third-party modules.
"""
import asyncio
import sys

HTTP = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
WS = (b"GET /ws HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


async def open_one(port, mode, gate):
    async with gate:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(WS if mode == "ws" else HTTP)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        status = head.split(b" ", 2)[1]
        if mode == "ws":
            assert status == b"101", head
        else:
            assert status == b"200", head
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
        return writer


async def main():
    port, mode, count = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    gate = asyncio.Semaphore(200)
    writers = await asyncio.gather(*(open_one(port, mode, gate) for _ in range(count)))
    print(f"ready {len(writers)}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for w in writers:
        w.close()


asyncio.run(main())
