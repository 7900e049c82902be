-- Prints one machine-readable line with what wrk counted: requests,
-- responses with a status of 400 or more, and socket errors by kind.
done = function(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        "CHAOS requests=%d non2xx=%d connect=%d read=%d write=%d timeout=%d\n",
        summary.requests, e.status, e.connect, e.read, e.write, e.timeout))
end
