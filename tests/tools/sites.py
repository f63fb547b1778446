"""The demo's web and syslog servers: HTTP on :80 and HTTPS on :443 of every address (one
self-signed certificate; the clients do not check it, but they send the site's name as TLS
SNI and HTTP Host), and a syslog sink on UDP :514.

usage: sites.py DIR   (serves DIR; DIR/cert.pem and DIR/key.pem are the certificate)
"""
import http.server
import os
import socket
import ssl
import sys
import threading


class Quiet(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass


def serve(port, tls):
    server = http.server.ThreadingHTTPServer(("0.0.0.0", port), Quiet)
    if tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain("cert.pem", "key.pem")
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


def syslog_sink():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", 514))
    while True:
        sock.recv(65536)


def main():
    os.chdir(sys.argv[1])
    threading.Thread(target=serve, args=(80, False), daemon=True).start()
    threading.Thread(target=syslog_sink, daemon=True).start()
    serve(443, True)


if __name__ == "__main__":
    main()
