# The tutorial's UDP server, ported to Python 3: the reference that udpkit's
# own client must work against.  Port from argv[1]; it stops after argv[2]
# datagrams so a test can never leave it running.
import socket
import sys

port = int(sys.argv[1])
count = int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
# 绑定端口:
s.bind(('127.0.0.1', port))
print('Bind UDP on %d...' % port, flush=True)
for _ in range(count):
    # 接收数据:
    data, addr = s.recvfrom(1024)
    print('Received from %s:%s.' % addr, flush=True)
    s.sendto(b'Hello, %s!' % data, addr)
s.close()
