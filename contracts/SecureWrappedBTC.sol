// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.28;

/// @notice The part of `ReserveFeed` the token uses.
interface IReserveFeed {
    function checkSignatures(bytes32 digest, bytes calldata signatures) external view;
    function latestReserve()
        external
        view
        returns (uint64 reserveSats, uint64 otherChainsSupply, uint32 btcHeight, uint40 reportedAt, uint40 updatedAt);
}

/// @title Universal Bitcoin wrapped BTC with a secure, guardian-bound mint (ERC-20, 8 decimals).
/// @notice A mint needs an authorisation signed by the guardians (the feed's current
/// set, at its threshold) naming the recipient, the amount, the Bitcoin deposit it
/// consumes and a nonce, each usable once; and it is refused when this chain's supply
/// plus the other chains' attested supply would exceed the attested reserve, or when
/// the latest attestation is older than `maxReportAge`. Nobody holds a minter key:
/// whoever relays the authorisation only pays the gas. A burn is never blocked and
/// names the Bitcoin output script that the released BTC must pay.
contract SecureWrappedBTC {
    string public constant name = "Universal Bitcoin";
    string public constant symbol = "uBTC";
    uint8 public constant decimals = 8;

    bytes32 public constant MINT_TYPEHASH =
        keccak256("Mint(address recipient,uint256 amount,bytes32 depositTxid,uint32 depositVout,uint256 nonce)");
    bytes32 private constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    bytes32 private constant NAME_HASH = keccak256("Universal Bitcoin");
    bytes32 private constant VERSION_HASH = keccak256("1");
    /// @dev Bitcoin's consensus limit on a script's size.
    uint256 private constant MAX_SCRIPT_LEN = 10_000;

    uint256 public totalSupply;
    mapping(address => uint256) public balanceOf;
    mapping(address => mapping(address => uint256)) public allowance;

    /// @dev Fixed at deployment: no key can swap the feed or loosen the age limit.
    IReserveFeed public immutable feed;
    uint256 public immutable maxReportAge;

    /// @dev keccak256(txid, vout) of every deposit already minted.
    mapping(bytes32 => bool) public depositUsed;
    mapping(uint256 => bool) public nonceUsed;

    uint256 private immutable deployedChainId;
    bytes32 private immutable deployedDomainSeparator;

    event Transfer(address indexed from, address indexed to, uint256 value);
    event Approval(address indexed owner, address indexed spender, uint256 value);
    event Minted(address indexed to, uint256 amount, bytes32 indexed depositTxid, uint32 depositVout, uint256 nonce);
    event Redeemed(address indexed from, uint256 amount, bytes btcScript);

    error ZeroAddress();
    error InsufficientBalance();
    error InsufficientAllowance();
    error DepositUsed(bytes32 depositTxid, uint32 depositVout);
    error NonceUsed(uint256 nonce);
    error StaleReserves(uint256 reportedAt, uint256 maxAge);
    error ExceedsReserves(uint256 wouldBe, uint256 reserveSats);
    error BadScript(uint256 length);

    constructor(IReserveFeed feed_, uint256 maxReportAge_) {
        if (address(feed_) == address(0)) revert ZeroAddress();
        feed = feed_;
        maxReportAge = maxReportAge_;
        deployedChainId = block.chainid;
        deployedDomainSeparator = _buildDomainSeparator();
    }

    /// @notice Mints `amount` to `to` for the deposit `depositTxid:depositVout`.
    /// @param signatures the guardians' signatures over the `Mint` digest, packed as in
    /// `ReserveFeed.submit` (65 bytes each, ascending signer addresses).
    function mint(
        address to,
        uint256 amount,
        bytes32 depositTxid,
        uint32 depositVout,
        uint256 nonce,
        bytes calldata signatures
    ) external {
        if (to == address(0)) revert ZeroAddress();
        bytes32 deposit = keccak256(abi.encodePacked(depositTxid, depositVout));
        if (depositUsed[deposit]) revert DepositUsed(depositTxid, depositVout);
        if (nonceUsed[nonce]) revert NonceUsed(nonce);
        feed.checkSignatures(mintDigest(to, amount, depositTxid, depositVout, nonce), signatures);

        (uint64 reserveSats, uint64 otherChainsSupply,, uint40 reportedAt,) = feed.latestReserve();
        // The report's own time, not its submission time: a late-relayed report
        // describes reserves as old as the attestation.
        if (block.timestamp > uint256(reportedAt) + maxReportAge) revert StaleReserves(reportedAt, maxReportAge);
        uint256 wouldBe = totalSupply + amount + otherChainsSupply;
        if (wouldBe > reserveSats) revert ExceedsReserves(wouldBe, reserveSats);

        depositUsed[deposit] = true;
        nonceUsed[nonce] = true;
        totalSupply += amount;
        balanceOf[to] += amount;
        emit Transfer(address(0), to, amount);
        emit Minted(to, amount, depositTxid, depositVout, nonce);
    }

    /// @notice Burns the caller's tokens to redeem BTC to `btcScript` (a Bitcoin output
    /// script). Never depends on the feed: redemptions stay open when reports stop.
    function burn(uint256 amount, bytes calldata btcScript) external {
        if (btcScript.length == 0 || btcScript.length > MAX_SCRIPT_LEN) revert BadScript(btcScript.length);
        if (balanceOf[msg.sender] < amount) revert InsufficientBalance();
        balanceOf[msg.sender] -= amount;
        totalSupply -= amount;
        emit Transfer(msg.sender, address(0), amount);
        emit Redeemed(msg.sender, amount, btcScript);
    }

    /// @notice The EIP-712 digest the guardians sign to authorise a mint on this chain
    /// and token (the domain names both).
    function mintDigest(address to, uint256 amount, bytes32 depositTxid, uint32 depositVout, uint256 nonce)
        public
        view
        returns (bytes32)
    {
        bytes32 structHash = keccak256(abi.encode(MINT_TYPEHASH, to, amount, depositTxid, depositVout, nonce));
        return keccak256(abi.encodePacked("\x19\x01", domainSeparator(), structHash));
    }

    function domainSeparator() public view returns (bytes32) {
        return block.chainid == deployedChainId ? deployedDomainSeparator : _buildDomainSeparator();
    }

    function transfer(address to, uint256 value) external returns (bool) {
        _transfer(msg.sender, to, value);
        return true;
    }

    function approve(address spender, uint256 value) external returns (bool) {
        allowance[msg.sender][spender] = value;
        emit Approval(msg.sender, spender, value);
        return true;
    }

    function transferFrom(address from, address to, uint256 value) external returns (bool) {
        uint256 allowed = allowance[from][msg.sender];
        if (allowed != type(uint256).max) {
            if (allowed < value) revert InsufficientAllowance();
            allowance[from][msg.sender] = allowed - value;
        }
        _transfer(from, to, value);
        return true;
    }

    function _transfer(address from, address to, uint256 value) internal {
        if (to == address(0)) revert ZeroAddress();
        if (balanceOf[from] < value) revert InsufficientBalance();
        balanceOf[from] -= value;
        balanceOf[to] += value;
        emit Transfer(from, to, value);
    }

    function _buildDomainSeparator() private view returns (bytes32) {
        return keccak256(abi.encode(DOMAIN_TYPEHASH, NAME_HASH, VERSION_HASH, block.chainid, address(this)));
    }
}
