// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.28;

/// @title Universal Bitcoin wrapped BTC (ERC-20, 8 decimals like satoshis).
/// @notice Only the minter mints and burns: it does so after the guardians approved a
/// deposit or a redemption M-of-N off-chain. The admin may only change the minter.
contract WrappedBTC {
    string public constant name = "Universal Bitcoin";
    string public constant symbol = "uBTC";
    uint8 public constant decimals = 8;

    uint256 public totalSupply;
    mapping(address => uint256) public balanceOf;
    mapping(address => mapping(address => uint256)) public allowance;

    address public admin;
    address public minter;

    event Transfer(address indexed from, address indexed to, uint256 value);
    event Approval(address indexed owner, address indexed spender, uint256 value);
    event MinterChanged(address indexed previous, address indexed next);

    error NotMinter();
    error NotAdmin();
    error InsufficientBalance();
    error InsufficientAllowance();
    error ZeroAddress();

    constructor(address admin_, address minter_) {
        if (admin_ == address(0) || minter_ == address(0)) revert ZeroAddress();
        admin = admin_;
        minter = minter_;
        emit MinterChanged(address(0), minter_);
    }

    modifier onlyMinter() {
        if (msg.sender != minter) revert NotMinter();
        _;
    }

    function setMinter(address next) external {
        if (msg.sender != admin) revert NotAdmin();
        if (next == address(0)) revert ZeroAddress();
        emit MinterChanged(minter, next);
        minter = next;
    }

    function mint(address to, uint256 amount) external onlyMinter {
        if (to == address(0)) revert ZeroAddress();
        totalSupply += amount;
        balanceOf[to] += amount;
        emit Transfer(address(0), to, amount);
    }

    /// @notice Burns from the minter's own balance: redeemed tokens are first sent to
    /// the minter, so a burn never takes tokens from a holder without their transfer.
    function burn(uint256 amount) external onlyMinter {
        if (balanceOf[msg.sender] < amount) revert InsufficientBalance();
        balanceOf[msg.sender] -= amount;
        totalSupply -= amount;
        emit Transfer(msg.sender, address(0), amount);
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
}
