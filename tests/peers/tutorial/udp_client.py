# The tutorial's UDP client, ported to Python 3 and nothing else changed but
# the port (argv[1]) and a socket timeout so a broken server fails the test
# instead of hanging it.
import socket
import sys

port = int(sys.argv[1]) if len(sys.argv) > 1 else 9999
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
for data in [b'Michael', b'Tracy', b'Sarah']:
    # 发送数据:
    s.sendto(data, ('127.0.0.1', port))
    # 接收数据:
    print(s.recv(1024).decode('utf-8'))
s.close()
