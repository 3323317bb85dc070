// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.28;

/// @notice Chainlink's read interface for price and proof-of-reserve feeds, so existing
/// consumers read this feed unchanged.
interface AggregatorV3Interface {
    function decimals() external view returns (uint8);
    function description() external view returns (string memory);
    function version() external view returns (uint256);
    function getRoundData(uint80 roundId)
        external
        view
        returns (uint80 roundId_, int256 answer, uint256 startedAt, uint256 updatedAt, uint80 answeredInRound);
    function latestRoundData()
        external
        view
        returns (uint80 roundId, int256 answer, uint256 startedAt, uint256 updatedAt, uint80 answeredInRound);
}

/// @title Universal Bitcoin reserve feed.
/// @notice Publishes the guardians' reserve attestations on this chain. A report is
/// accepted only with signatures of at least `threshold` distinct guardians over its
/// EIP-712 digest, whose domain names this chain and this contract, so nobody (the
/// relayer included) can publish a figure the guardians did not sign, and a report
/// signed for another chain or feed is refused here. The answer is the reserve in sats
/// (8 decimals, like BTC). The guardian set, the threshold and the pinned reserve
/// registry fingerprint change only with signatures of the current set.
contract ReserveFeed is AggregatorV3Interface {
    /// @dev What the guardians sign; the supply figure is the sum over every chain but
    /// this one, `otherChainsDigest` commits to its entries (chain, block, supply).
    struct Report {
        uint32 btcHeight;
        bytes32 btcBlockHash;
        uint64 reserveSats;
        uint64 otherChainsSupply;
        bytes32 otherChainsDigest;
        bytes32 attestationDigest;
        uint64 timestamp;
    }

    /// @dev One storage slot per round (240 bits): the cost of `submit` is dominated by
    /// one new slot, not by the report's size.
    struct Round {
        uint64 reserveSats;
        uint64 otherChainsSupply;
        uint32 btcHeight;
        uint40 reportedAt;
        uint40 updatedAt;
    }

    bytes32 public constant REPORT_TYPEHASH = keccak256(
        "Report(uint32 btcHeight,bytes32 btcBlockHash,uint64 reserveSats,uint64 otherChainsSupply,bytes32 otherChainsDigest,bytes32 attestationDigest,uint64 timestamp)"
    );
    bytes32 public constant GUARDIAN_SET_TYPEHASH =
        keccak256("GuardianSet(address[] guardians,uint8 threshold,uint64 nonce)");
    bytes32 public constant REGISTRY_TYPEHASH = keccak256("Registry(bytes32 fingerprint,uint64 nonce)");
    bytes32 private constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    bytes32 private constant NAME_HASH = keccak256("Universal Bitcoin Reserve Feed");
    bytes32 private constant VERSION_HASH = keccak256("1");
    /// @dev secp256k1 order / 2: a signature with a higher s is the malleated twin of
    /// one with a lower s, refused so that each approval has one encoding.
    uint256 private constant HALF_ORDER = 0x7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0;
    /// @dev 21 million BTC in sats: no honest report exceeds it.
    uint64 private constant MAX_SATS = 2_100_000_000_000_000;
    /// @dev How far a report's timestamp may be ahead of this chain's clock.
    uint256 private constant MAX_CLOCK_SKEW = 300;

    string public constant override description = "Universal Bitcoin BTC reserves (sats)";
    uint8 public constant override decimals = 8;
    uint256 public constant override version = 1;

    // Packed in one slot: read once by `submit`.
    uint80 public latestRound;
    uint32 public epoch;
    uint8 public threshold;
    uint64 public nonce;

    mapping(uint80 => Round) private rounds;
    /// @dev A guardian is current when its entry equals `epoch`: a rotation bumps the
    /// epoch instead of clearing the old set.
    mapping(address => uint32) private guardianEpoch;
    address[] private guardianList;

    bytes32 public latestAttestationDigest;
    bytes32 public registryFingerprint;

    uint256 private immutable deployedChainId;
    bytes32 private immutable deployedDomainSeparator;

    event ReportSubmitted(
        uint80 indexed roundId,
        uint32 btcHeight,
        bytes32 btcBlockHash,
        uint64 reserveSats,
        uint64 otherChainsSupply,
        bytes32 otherChainsDigest,
        bytes32 indexed attestationDigest,
        uint64 timestamp
    );
    event GuardiansChanged(uint32 indexed epoch, address[] guardians, uint8 threshold);
    event RegistryChanged(bytes32 previous, bytes32 next);

    error TooFewSignatures(uint256 given, uint256 threshold);
    error BadSignatureLength(uint256 length);
    error BadSignature(uint256 index);
    error HighS(uint256 index);
    error RepeatedSigner(address signer);
    error SignersNotAscending(address previous, address signer);
    error NotGuardian(address signer);
    error HeightNotAbove(uint32 height, uint32 last);
    error TimestampInFuture(uint64 timestamp);
    error ReserveTooLarge(uint64 sats);
    error BadGuardianSet();
    error NoRound(uint80 roundId);

    constructor(address[] memory guardians_, uint8 threshold_, bytes32 registryFingerprint_) {
        deployedChainId = block.chainid;
        deployedDomainSeparator = _buildDomainSeparator();
        _setGuardians(guardians_, threshold_);
        registryFingerprint = registryFingerprint_;
        emit RegistryChanged(bytes32(0), registryFingerprint_);
    }

    // ----- reports -----

    /// @notice Publishes a report signed by at least `threshold` current guardians.
    /// @param signatures 65-byte (r, s, v) signatures, concatenated, in ascending order
    /// of the signers' addresses (the cheapest proof that they are distinct).
    function submit(Report calldata report, bytes calldata signatures) external {
        uint80 last = latestRound;
        uint32 lastHeight = rounds[last].btcHeight;
        if (last != 0 && report.btcHeight <= lastHeight) revert HeightNotAbove(report.btcHeight, lastHeight);
        if (report.reserveSats > MAX_SATS || report.otherChainsSupply > MAX_SATS) {
            revert ReserveTooLarge(report.reserveSats);
        }
        if (report.timestamp > block.timestamp + MAX_CLOCK_SKEW) revert TimestampInFuture(report.timestamp);
        _checkSignatures(_hashTypedData(hashReport(report)), signatures, threshold, epoch);

        uint80 id = last + 1;
        latestRound = id;
        rounds[id] = Round({
            reserveSats: report.reserveSats,
            otherChainsSupply: report.otherChainsSupply,
            btcHeight: report.btcHeight,
            reportedAt: uint40(report.timestamp),
            updatedAt: uint40(block.timestamp)
        });
        latestAttestationDigest = report.attestationDigest;
        emit ReportSubmitted(
            id,
            report.btcHeight,
            report.btcBlockHash,
            report.reserveSats,
            report.otherChainsSupply,
            report.otherChainsDigest,
            report.attestationDigest,
            report.timestamp
        );
    }

    /// @notice The EIP-712 struct hash of a report (without the domain).
    function hashReport(Report calldata r) public pure returns (bytes32) {
        return keccak256(
            abi.encode(
                REPORT_TYPEHASH,
                r.btcHeight,
                r.btcBlockHash,
                r.reserveSats,
                r.otherChainsSupply,
                r.otherChainsDigest,
                r.attestationDigest,
                r.timestamp
            )
        );
    }

    /// @notice The digest the guardians sign for `report` on this chain and feed.
    function reportDigest(Report calldata report) external view returns (bytes32) {
        return _hashTypedData(hashReport(report));
    }

    /// @notice Reverts unless `signatures` holds at least `threshold` current guardians'
    /// signatures over `digest`, in ascending signer order. Other contracts (the secure
    /// token) use it so that one guardian set governs the feed and the mints.
    function checkSignatures(bytes32 digest, bytes calldata signatures) external view {
        _checkSignatures(digest, signatures, threshold, epoch);
    }

    /// @notice The latest round's figures for a secure mint, in one call.
    function latestReserve()
        external
        view
        returns (uint64 reserveSats, uint64 otherChainsSupply, uint32 btcHeight, uint40 reportedAt, uint40 updatedAt)
    {
        uint80 id = latestRound;
        if (id == 0) revert NoRound(0);
        Round memory r = rounds[id];
        return (r.reserveSats, r.otherChainsSupply, r.btcHeight, r.reportedAt, r.updatedAt);
    }

    // ----- AggregatorV3Interface -----

    function getRoundData(uint80 roundId)
        public
        view
        override
        returns (uint80, int256, uint256, uint256, uint80)
    {
        if (roundId == 0 || roundId > latestRound) revert NoRound(roundId);
        Round memory r = rounds[roundId];
        return (roundId, int256(uint256(r.reserveSats)), r.reportedAt, r.updatedAt, roundId);
    }

    function latestRoundData() external view override returns (uint80, int256, uint256, uint256, uint80) {
        return getRoundData(latestRound);
    }

    // ----- governance: M signatures of the current set -----

    /// @notice Replaces the guardian set and threshold. `next` must be ascending
    /// (so without repeats); signed by the current set over `GuardianSet` with `nonce`.
    function setGuardians(address[] calldata next, uint8 nextThreshold, bytes calldata signatures) external {
        uint64 n = nonce;
        bytes32 structHash =
            keccak256(abi.encode(GUARDIAN_SET_TYPEHASH, keccak256(abi.encodePacked(next)), nextThreshold, n));
        _checkSignatures(_hashTypedData(structHash), signatures, threshold, epoch);
        nonce = n + 1;
        _setGuardians(next, nextThreshold);
    }

    /// @notice Pins a new reserve registry fingerprint; signed by the current set over
    /// `Registry` with `nonce`.
    function setRegistry(bytes32 fingerprint, bytes calldata signatures) external {
        uint64 n = nonce;
        bytes32 structHash = keccak256(abi.encode(REGISTRY_TYPEHASH, fingerprint, n));
        _checkSignatures(_hashTypedData(structHash), signatures, threshold, epoch);
        nonce = n + 1;
        emit RegistryChanged(registryFingerprint, fingerprint);
        registryFingerprint = fingerprint;
    }

    function guardians() external view returns (address[] memory) {
        return guardianList;
    }

    function isGuardian(address who) external view returns (bool) {
        return guardianEpoch[who] == epoch;
    }

    function domainSeparator() public view returns (bytes32) {
        return block.chainid == deployedChainId ? deployedDomainSeparator : _buildDomainSeparator();
    }

    // ----- internals -----

    function _setGuardians(address[] memory next, uint8 nextThreshold) private {
        if (nextThreshold == 0 || nextThreshold > next.length) revert BadGuardianSet();
        uint32 e = epoch + 1;
        address previous = address(0);
        for (uint256 i = 0; i < next.length; ++i) {
            // Ascending and non-zero: distinct, and address(0) (ecrecover's failure
            // value) can never count as a guardian.
            if (next[i] <= previous) revert BadGuardianSet();
            guardianEpoch[next[i]] = e;
            previous = next[i];
        }
        epoch = e;
        threshold = nextThreshold;
        guardianList = next;
        emit GuardiansChanged(e, next, nextThreshold);
    }

    function _checkSignatures(bytes32 digest, bytes calldata signatures, uint256 m, uint32 e) private view {
        uint256 count = signatures.length / 65;
        if (signatures.length != count * 65) revert BadSignatureLength(signatures.length);
        if (count < m) revert TooFewSignatures(count, m);
        address previous = address(0);
        for (uint256 i = 0; i < count; ++i) {
            bytes32 r;
            bytes32 s;
            uint8 v;
            assembly {
                let p := add(signatures.offset, mul(i, 65))
                r := calldataload(p)
                s := calldataload(add(p, 32))
                v := byte(0, calldataload(add(p, 64)))
            }
            if (uint256(s) > HALF_ORDER) revert HighS(i);
            if (v != 27 && v != 28) revert BadSignature(i);
            address signer = ecrecover(digest, v, r, s);
            if (signer == address(0)) revert BadSignature(i);
            if (signer == previous) revert RepeatedSigner(signer);
            if (signer < previous) revert SignersNotAscending(previous, signer);
            // A signature made for another chain or feed recovers to an unrelated
            // address, so it is refused here.
            if (guardianEpoch[signer] != e) revert NotGuardian(signer);
            previous = signer;
        }
    }

    function _hashTypedData(bytes32 structHash) private view returns (bytes32) {
        return keccak256(abi.encodePacked("\x19\x01", domainSeparator(), structHash));
    }

    function _buildDomainSeparator() private view returns (bytes32) {
        return keccak256(abi.encode(DOMAIN_TYPEHASH, NAME_HASH, VERSION_HASH, block.chainid, address(this)));
    }
}
