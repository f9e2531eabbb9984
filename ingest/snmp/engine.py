"""pysnmp objects for the config's credentials (the one place the config meets
pysnmp's names)."""

from __future__ import annotations

from pysnmp.entity import config as engine_config
from pysnmp.hlapi.v3arch.asyncio import CommunityData, UsmUserData
from pysnmp.proto.rfc1902 import OctetString

from citylake.ingest.snmp.auth import SnmpAuth, UsmUser

AUTH_PROTOCOLS = {
    "MD5": engine_config.USM_AUTH_HMAC96_MD5,
    "SHA": engine_config.USM_AUTH_HMAC96_SHA,
    "SHA224": engine_config.USM_AUTH_HMAC128_SHA224,
    "SHA256": engine_config.USM_AUTH_HMAC192_SHA256,
    "SHA384": engine_config.USM_AUTH_HMAC256_SHA384,
    "SHA512": engine_config.USM_AUTH_HMAC384_SHA512,
}
PRIV_PROTOCOLS = {
    "DES": engine_config.USM_PRIV_CBC56_DES,
    "3DES": engine_config.USM_PRIV_CBC168_3DES,
    "AES": engine_config.USM_PRIV_CFB128_AES,
    "AES192": engine_config.USM_PRIV_CFB192_AES,
    "AES256": engine_config.USM_PRIV_CFB256_AES,
}


def auth_data(auth: SnmpAuth) -> CommunityData | UsmUserData:
    """What pysnmp's command generator takes for ``auth``."""
    if auth.version == "2c":
        return CommunityData(auth.community, mpModel=1)
    assert auth.usm is not None  # the model checked
    return usm_user_data(auth.usm)


def usm_user_data(user: UsmUser) -> UsmUserData:
    return UsmUserData(
        user.user,
        authKey=user.auth_key,
        privKey=user.priv_key,
        authProtocol=AUTH_PROTOCOLS[user.auth_protocol]
        if user.auth_protocol
        else engine_config.USM_AUTH_NONE,
        privProtocol=PRIV_PROTOCOLS[user.priv_protocol]
        if user.priv_protocol
        else engine_config.USM_PRIV_NONE,
    )


def add_trap_user(engine: object, user: UsmUser) -> None:
    """Register ``user`` with a receiving engine; keys are localised to the
    sender's engine id when one is configured (RFC 3414 2.6)."""
    kwargs: dict[str, object] = {}
    if user.engine_id is not None:
        kwargs["securityEngineId"] = OctetString(hexValue=user.engine_id)
    engine_config.add_v3_user(
        engine,
        user.user,
        AUTH_PROTOCOLS[user.auth_protocol] if user.auth_protocol else engine_config.USM_AUTH_NONE,
        user.auth_key,
        PRIV_PROTOCOLS[user.priv_protocol] if user.priv_protocol else engine_config.USM_PRIV_NONE,
        user.priv_key,
        **kwargs,
    )
