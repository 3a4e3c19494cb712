# The design documents' own client (../shared/seeds/000_552fefb049d5ceba.txt, the two ```python
# blocks "service-discovery/registry/consul/service_registry.py" and
# "service-discovery/client/service_discovery_client.py"), copied unchanged: it is what the team
# that wrote them will point at sextant. Only this header is ours.
import asyncio
import aiohttp
import json
from typing import Dict, List, Optional, Any
from datetime import datetime, timedelta
from dataclasses import dataclass
import logging

logger = logging.getLogger(__name__)

@dataclass
class ServiceInstance:
    """서비스 인스턴스"""
    id: str
    service_name: str
    address: str
    port: int
    tags: List[str]
    meta: Dict[str, str]
    status: str  # passing, warning, critical
    last_check: datetime
    created_at: datetime

@dataclass
class ServiceHealth:
    """서비스 헬스 정보"""
    service_id: str
    status: str
    output: str
    last_check: datetime
    check_id: str

class ConsulServiceRegistry:
    """Consul 기반 서비스 레지스트리"""
    
    def __init__(self, consul_url: str = "http://consul-service:8500"):
        self.consul_url = consul_url
        self.session = None
        self.services_cache = {}
        self.cache_ttl = 30  # 30초 캐시
        self.last_cache_update = None
        
        logger.info(f"Initialized Consul service registry: {consul_url}")
    
    async def initialize(self):
        """초기화"""
        try:
            self.session = aiohttp.ClientSession()
            
            # Consul 연결 테스트
            async with self.session.get(f"{self.consul_url}/v1/status/leader") as response:
                if response.status == 200:
                    leader = await response.text()
                    logger.info(f"Connected to Consul cluster, leader: {leader}")
                else:
                    raise Exception(f"Failed to connect to Consul: {response.status}")
                    
        except Exception as e:
            logger.error(f"Failed to initialize Consul registry: {e}")
            raise
    
    async def register_service(self, service_name: str, service_id: str, 
                             address: str, port: int, tags: List[str] = None,
                             meta: Dict[str, str] = None) -> bool:
        """서비스 등록"""
        try:
            registration_data = {
                "ID": service_id,
                "Name": service_name,
                "Address": address,
                "Port": port,
                "Tags": tags or [],
                "Meta": meta or {},
                "Check": {
                    "HTTP": f"http://{address}:{port}/health",
                    "Interval": "10s",
                    "Timeout": "5s",
                    "DeregisterCriticalServiceAfter": "30s"
                }
            }
            
            async with self.session.put(
                f"{self.consul_url}/v1/agent/service/register",
                json=registration_data
            ) as response:
                if response.status == 200:
                    logger.info(f"Registered service: {service_name} ({service_id})")
                    await self._invalidate_cache()
                    return True
                else:
                    error_text = await response.text()
                    logger.error(f"Failed to register service: {error_text}")
                    return False
                    
        except Exception as e:
            logger.error(f"Service registration failed: {e}")
            return False
    
    async def deregister_service(self, service_id: str) -> bool:
        """서비스 해제"""
        try:
            async with self.session.put(
                f"{self.consul_url}/v1/agent/service/deregister/{service_id}"
            ) as response:
                if response.status == 200:
                    logger.info(f"Deregistered service: {service_id}")
                    await self._invalidate_cache()
                    return True
                else:
                    error_text = await response.text()
                    logger.error(f"Failed to deregister service: {error_text}")
                    return False
                    
        except Exception as e:
            logger.error(f"Service deregistration failed: {e}")
            return False
    
    async def get_service_instances(self, service_name: str) -> List[ServiceInstance]:
        """서비스 인스턴스 조회"""
        try:
            # 캐시 확인
            if self._is_cache_valid():
                if service_name in self.services_cache:
                    return self.services_cache[service_name]
            
            async with self.session.get(
                f"{self.consul_url}/v1/health/service/{service_name}"
            ) as response:
                if response.status == 200:
                    data = await response.json()
                    instances = []
                    
                    for service_data in data:
                        service = service_data['Service']
                        checks = service_data['Checks']
                        
                        # 헬스 체크 상태 확인
                        status = "critical"
                        for check in checks:
                            if check['CheckID'] == f"service:{service['ID']}":
                                status = check['Status']
                                break
                        
                        instance = ServiceInstance(
                            id=service['ID'],
                            service_name=service['Service'],
                            address=service['Address'],
                            port=service['Port'],
                            tags=service.get('Tags', []),
                            meta=service.get('Meta', {}),
                            status=status,
                            last_check=datetime.now(),
                            created_at=datetime.now()
                        )
                        instances.append(instance)
                    
                    # 캐시 업데이트
                    self.services_cache[service_name] = instances
                    self.last_cache_update = datetime.now()
                    
                    return instances
                else:
                    logger.error(f"Failed to get service instances: {response.status}")
                    return []
                    
        except Exception as e:
            logger.error(f"Failed to get service instances: {e}")
            return []
    
    async def get_healthy_instances(self, service_name: str) -> List[ServiceInstance]:
        """건강한 서비스 인스턴스 조회"""
        instances = await self.get_service_instances(service_name)
        return [instance for instance in instances if instance.status == "passing"]
    
    async def get_service_health(self, service_id: str) -> Optional[ServiceHealth]:
        """서비스 헬스 정보 조회"""
        try:
            async with self.session.get(
                f"{self.consul_url}/v1/health/checks/{service_id}"
            ) as response:
                if response.status == 200:
                    checks = await response.json()
                    
                    for check in checks:
                        if check['CheckID'] == f"service:{service_id}":
                            return ServiceHealth(
                                service_id=service_id,
                                status=check['Status'],
                                output=check.get('Output', ''),
                                last_check=datetime.fromisoformat(check['LastUpdate'].replace('Z', '+00:00')),
                                check_id=check['CheckID']
                            )
                    
                    return None
                else:
                    logger.error(f"Failed to get service health: {response.status}")
                    return None
                    
        except Exception as e:
            logger.error(f"Failed to get service health: {e}")
            return None
    
    async def list_services(self) -> List[str]:
        """등록된 서비스 목록 조회"""
        try:
            async with self.session.get(
                f"{self.consul_url}/v1/catalog/services"
            ) as response:
                if response.status == 200:
                    services = await response.json()
                    return list(services.keys())
                else:
                    logger.error(f"Failed to list services: {response.status}")
                    return []
                    
        except Exception as e:
            logger.error(f"Failed to list services: {e}")
            return []
    
    def _is_cache_valid(self) -> bool:
        """캐시 유효성 확인"""
        if not self.last_cache_update:
            return False
        
        return (datetime.now() - self.last_cache_update).seconds < self.cache_ttl
    
    async def _invalidate_cache(self):
        """캐시 무효화"""
        self.services_cache.clear()
        self.last_cache_update = None
    
    async def close(self):
        """세션 종료"""
        if self.session:
            await self.session.close()
            logger.info("Closed Consul service registry session")


# service-discovery/client/service_discovery_client.py
import asyncio
import random
from typing import Dict, List, Optional, Any
from datetime import datetime
import logging

logger = logging.getLogger(__name__)

class ServiceDiscoveryClient:
    """서비스 디스커버리 클라이언트"""
    
    def __init__(self, registry: ConsulServiceRegistry):
        self.registry = registry
        self.service_cache = {}
        self.cache_ttl = 60  # 60초
        self.last_cache_update = {}
        
        logger.info("Initialized service discovery client")
    
    async def get_service_url(self, service_name: str, 
                            load_balancing_strategy: str = "round_robin") -> Optional[str]:
        """서비스 URL 조회"""
        try:
            instances = await self.registry.get_healthy_instances(service_name)
            
            if not instances:
                logger.warning(f"No healthy instances found for service: {service_name}")
                return None
            
            # 로드 밸런싱 전략 적용
            selected_instance = self._select_instance(instances, load_balancing_strategy)
            
            if selected_instance:
                service_url = f"http://{selected_instance.address}:{selected_instance.port}"
                logger.debug(f"Selected service URL: {service_url}")
                return service_url
            
            return None
            
        except Exception as e:
            logger.error(f"Failed to get service URL: {e}")
            return None
    
    async def get_service_urls(self, service_name: str) -> List[str]:
        """모든 서비스 URL 조회"""
        try:
            instances = await self.registry.get_healthy_instances(service_name)
            
            urls = []
            for instance in instances:
                url = f"http://{instance.address}:{instance.port}"
                urls.append(url)
            
            return urls
            
        except Exception as e:
            logger.error(f"Failed to get service URLs: {e}")
            return []
    
    def _select_instance(self, instances: List[ServiceInstance], 
                        strategy: str) -> Optional[ServiceInstance]:
        """인스턴스 선택"""
        if not instances:
            return None
        
        if strategy == "round_robin":
            return self._round_robin_select(instances)
        elif strategy == "random":
            return self._random_select(instances)
        elif strategy == "least_connections":
            return self._least_connections_select(instances)
        else:
            # 기본값은 라운드 로빈
            return self._round_robin_select(instances)
    
    def _round_robin_select(self, instances: List[ServiceInstance]) -> ServiceInstance:
        """라운드 로빈 선택"""
        # 간단한 구현 (실제로는 더 정교한 로직 필요)
        return instances[0]
    
    def _random_select(self, instances: List[ServiceInstance]) -> ServiceInstance:
        """랜덤 선택"""
        return random.choice(instances)
    
    def _least_connections_select(self, instances: List[ServiceInstance]) -> ServiceInstance:
        """최소 연결 선택"""
        # 실제 구현에서는 연결 수 정보 필요
        return instances[0]
    
    async def register_service(self, service_name: str, service_id: str,
                             address: str, port: int, tags: List[str] = None,
                             meta: Dict[str, str] = None) -> bool:
        """서비스 등록"""
        try:
            success = await self.registry.register_service(
                service_name, service_id, address, port, tags, meta
            )
            
            if success:
                logger.info(f"Successfully registered service: {service_name} ({service_id})")
            else:
                logger.error(f"Failed to register service: {service_name} ({service_id})")
            
            return success
            
        except Exception as e:
            logger.error(f"Service registration failed: {e}")
            return False
    
    async def deregister_service(self, service_id: str) -> bool:
        """서비스 해제"""
        try:
            success = await self.registry.deregister_service(service_id)
            
            if success:
                logger.info(f"Successfully deregistered service: {service_id}")
            else:
                logger.error(f"Failed to deregister service: {service_id}")
            
            return success
            
        except Exception as e:
            logger.error(f"Service deregistration failed: {e}")
            return False
    
    async def get_service_health(self, service_name: str) -> Dict[str, Any]:
        """서비스 헬스 정보 조회"""
        try:
            instances = await self.registry.get_service_instances(service_name)
            
            health_info = {
                "service_name": service_name,
                "total_instances": len(instances),
                "healthy_instances": len([i for i in instances if i.status == "passing"]),
                "unhealthy_instances": len([i for i in instances if i.status != "passing"]),
                "instances": []
            }
            
            for instance in instances:
                health = await self.registry.get_service_health(instance.id)
                instance_info = {
                    "id": instance.id,
                    "address": instance.address,
                    "port": instance.port,
                    "status": instance.status,
                    "last_check": instance.last_check.isoformat(),
                    "health_details": health.__dict__ if health else None
                }
                health_info["instances"].append(instance_info)
            
            return health_info
            
        except Exception as e:
            logger.error(f"Failed to get service health: {e}")
            return {}
    
    async def list_all_services(self) -> List[str]:
        """모든 서비스 목록 조회"""
        try:
            return await self.registry.list_services()
        except Exception as e:
            logger.error(f"Failed to list services: {e}")
            return []
