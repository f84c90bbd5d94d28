package collective

import (
	"context"
	"strconv"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	moemeshv1 "github.com/moemesh/moemesh/proto/moemesh/v1"
)

// Metadata keys of an Exchange stream.
const (
	mdEpoch    = "moemesh-mesh-epoch"
	mdFrom     = "moemesh-from-worker"
	mdAccepted = "moemesh-accepted"
)

// Service is a worker's PeerService endpoint. Register it once on the
// worker's gRPC server; every Mesh created with it (one per mesh epoch)
// receives the calls addressed to its epoch.
type Service struct {
	moemeshv1.UnimplementedPeerServiceServer

	mu     sync.Mutex
	meshes map[uint64]*Mesh
}

var _ moemeshv1.PeerServiceServer = (*Service)(nil)

// NewService returns a Service with no mesh attached.
func NewService() *Service {
	return &Service{meshes: make(map[uint64]*Mesh)}
}

// Register registers the service on r; call it before r serves.
func (s *Service) Register(r grpc.ServiceRegistrar) {
	moemeshv1.RegisterPeerServiceServer(r, s)
}

func (s *Service) attach(m *Mesh) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.meshes[m.cfg.Epoch]; ok {
		return invalidf("a mesh for epoch %d is already attached to this Service", m.cfg.Epoch)
	}
	s.meshes[m.cfg.Epoch] = m
	return nil
}

func (s *Service) detach(m *Mesh) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.meshes[m.cfg.Epoch] == m {
		delete(s.meshes, m.cfg.Epoch)
	}
}

func (s *Service) lookup(epoch uint64) (*Mesh, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.meshes[epoch]
	if m == nil {
		return nil, status.Errorf(codes.Unavailable, "no mesh for epoch %d here", epoch)
	}
	return m, nil
}

// Hello implements PeerService.Hello.
func (s *Service) Hello(_ context.Context, req *moemeshv1.HelloRequest) (*moemeshv1.HelloResponse, error) {
	m, err := s.lookup(req.GetMeshEpoch())
	if err != nil {
		return nil, err
	}
	if err := m.checkPeer(req.GetFromWorker(), req.GetToWorker(), req.GetMeshSize(), req.GetWireDtype(), req.GetProtocolVersion()); err != nil {
		return nil, err
	}
	return &moemeshv1.HelloResponse{ProtocolVersion: ProtocolVersion, Worker: uint32(m.self)}, nil
}

// Exchange implements PeerService.Exchange.
func (s *Service) Exchange(stream moemeshv1.PeerService_ExchangeServer) error {
	md, _ := metadata.FromIncomingContext(stream.Context())
	epoch, err1 := mdUint(md, mdEpoch)
	from, err2 := mdUint(md, mdFrom)
	if err1 != nil || err2 != nil || from > uint64(^uint32(0)) {
		return status.Errorf(codes.InvalidArgument, "Exchange needs metadata %s and %s", mdEpoch, mdFrom)
	}
	m, err := s.lookup(epoch)
	if err != nil {
		return err
	}
	return m.accept(int(from), stream)
}

func mdUint(md metadata.MD, k string) (uint64, error) {
	v := md.Get(k)
	if len(v) != 1 {
		return 0, strconv.ErrSyntax
	}
	return strconv.ParseUint(v[0], 10, 64)
}
